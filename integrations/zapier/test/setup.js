'use strict';
// One Seqbridge for a test file, the app tester, and the connection's authData.

const zapier = require('zapier-platform-core');
const App = require('../index');
const { startSeqbridge, Api } = require('../../testing/seqbridge');

zapier.tools.env.inject();

const appTester = zapier.createAppTester(App);

const useSeqbridge = () => {
  const ctx = {};
  beforeAll(async () => {
    ctx.server = await startSeqbridge();
    ctx.api = new Api(ctx.server.url, ctx.server.apiKey);
    ctx.authData = { base_url: `${ctx.server.url}/`, api_key: ctx.server.apiKey };
  }, 90000);
  afterAll(async () => {
    if (ctx.server) {
      await ctx.server.stop();
    }
  }, 30000);
  return ctx;
};

/** A short unique suffix, so tests sharing one server never collide. */
const unique = () => Math.random().toString(36).slice(2, 10);

module.exports = { App, appTester, useSeqbridge, unique };
