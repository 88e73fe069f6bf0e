'use strict';
// One Seqbridge for the whole run (unless SEQBRIDGE_URL already names one); test files find it
// through the environment.
const { startSeqbridge } = require('../../testing/seqbridge');

module.exports = async () => {
  const server = await startSeqbridge();
  process.env.SEQBRIDGE_URL = server.url;
  process.env.SEQBRIDGE_API_KEY = server.apiKey;
  globalThis.__SEQBRIDGE__ = server;
};
