'use strict';
// What a Zap run shows when Seqbridge refuses: its code and message; and throttling for a 429.

const http = require('node:http');
const { App, appTester, useSeqbridge, unique } = require('./setup');

const parse = (error) => JSON.parse(error.message);

describe('errors', () => {
  const ctx = useSeqbridge();

  it('turns a Seqbridge error into a Zapier error with its code and status', async () => {
    const sequence = await ctx.api.activeSequence(`Errors ${unique()}`);
    const error = await appTester(App.creates.enrollment.operation.perform, {
      authData: ctx.authData,
      inputData: { sequence_id: sequence.id, email: `nobody-${unique()}@example.com` },
    }).catch((e) => e);
    expect(error.name).toBe('AppError');
    expect(parse(error)).toMatchObject({ code: 'not_found', status: 404 });
    expect(parse(error).message).toMatch(/No contact with email/);
  });

  it('names the offending fields of a validation error', async () => {
    const error = await appTester(App.creates.contact.operation.perform, {
      authData: ctx.authData,
      inputData: { email: 'not-an-email' },
    }).catch((e) => e);
    expect(parse(error).code).toMatch(/validation_failed|invalid_email/);
    expect(parse(error).message).toMatch(/email/i);
  });

  it('throttles on 429 for as long as Retry-After says', async () => {
    const server = http.createServer((req, res) => {
      res.writeHead(429, { 'Content-Type': 'application/json', 'Retry-After': '17' });
      res.end(JSON.stringify({ error: { code: 'rate_limited', message: 'Slow down.' } }));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const authData = { base_url: `http://127.0.0.1:${server.address().port}`, api_key: 'rk_live_x' };
      const error = await appTester(App.authentication.test, { authData }).catch((e) => e);
      expect(error.name).toBe('ThrottledError');
      expect(parse(error)).toEqual({ message: 'Slow down.', delay: 17 });
    } finally {
      server.close();
    }
  });

  it('says what happened when something other than Seqbridge answers', async () => {
    const server = http.createServer((req, res) => {
      res.writeHead(502, { 'Content-Type': 'text/html' });
      res.end('<html>Bad Gateway</html>');
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const authData = { base_url: `http://127.0.0.1:${server.address().port}`, api_key: 'rk_live_x' };
      const error = await appTester(App.authentication.test, { authData }).catch((e) => e);
      expect(parse(error)).toMatchObject({ code: 'http_502', status: 502, message: 'Seqbridge answered HTTP 502.' });
    } finally {
      server.close();
    }
  });
});
