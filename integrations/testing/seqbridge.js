'use strict';
// Test support shared by the Zapier and n8n packages: a real Seqbridge on loopback, a small API
// client to set the scene, and a loopback receiver for REST hook notifications.
//
// When SEQBRIDGE_URL and SEQBRIDGE_API_KEY are set (tests/test_integrations.py starts Seqbridge
// on SQLite or PostgreSQL and sets them), that server is used. Otherwise `startSeqbridge()` runs
// `seqbridge serve` itself on a fresh SQLite database ($SEQBRIDGE_BIN, default the repository's
// .venv/bin/seqbridge), so `npm test` works alone too.

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const ORG = process.env.SEQBRIDGE_TEST_ORG || 'seqbridge-integrations';

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `probe` until it returns something truthy, or fail after `timeoutMs` saying `what`. */
const eventually = async (probe, what, timeoutMs = 20000) => {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) {
        return value;
      }
    } catch (error) {
      last = error;
    }
    await sleep(150);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
};

/**
 * A Seqbridge for the tests: `{url, apiKey, stop}`. Started here (SQLite in a temp directory,
 * the worker polling every 0.2 s, loopback hook targets allowed) unless the environment names one.
 */
const startSeqbridge = async () => {
  if (process.env.SEQBRIDGE_URL && process.env.SEQBRIDGE_API_KEY) {
    return { url: process.env.SEQBRIDGE_URL.replace(/\/+$/, ''), apiKey: process.env.SEQBRIDGE_API_KEY, stop: async () => {} };
  }
  const bin = process.env.SEQBRIDGE_BIN || path.join(ROOT, '.venv', 'bin', 'seqbridge');
  if (!fs.existsSync(bin)) {
    throw new Error(`no Seqbridge at ${bin}: run ./scripts/test once (it makes .venv), or set SEQBRIDGE_BIN`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'seqbridge-js-'));
  const port = await freePort();
  const env = {
    ...process.env,
    SEQBRIDGE_DATABASE_URL: `sqlite:///${dir}/seqbridge.db`,
    SEQBRIDGE_MAPPINGS_DIR: path.join(__dirname, 'mappings'),
    SEQBRIDGE_WEBHOOK_SECRET: `whsec_${crypto.randomBytes(32).toString('base64')}`,
    SEQBRIDGE_ALLOW_PRIVATE_TARGETS: 'true',
    SEQBRIDGE_PROCESSOR_POLL_SECONDS: '0.2',
    SEQBRIDGE_DELIVERY_MAX_ATTEMPTS: '1',
    SEQBRIDGE_TEST_ORG: ORG,
    SEQBRIDGE_LOG_LEVEL: 'WARNING',
    PROMETHEUS_MULTIPROC_DIR: path.join(dir, 'metrics'),
  };
  const keyOutput = execFileSync(bin, ['keys', 'create', '--org', ORG, '--scope', '*', '--name', 'js-tests'], { env, cwd: dir, encoding: 'utf8' });
  const apiKey = keyOutput.trim().split('\n').pop().trim();
  const proc = spawn(bin, ['serve', '--host', '127.0.0.1', '--port', String(port), '--workers', '1'], {
    env,
    cwd: dir,
    // Its own process group: tools the tests run (n8n) signal theirs when they exit.
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const url = `http://127.0.0.1:${port}`;
  await eventually(async () => (await fetch(`${url}/readyz`)).ok, `Seqbridge on ${url} (${stderr})`, 60000);
  const stop = async () => {
    if (proc.exitCode === null) {
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(20000)]);
      if (proc.exitCode === null) {
        proc.kill('SIGKILL');
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { url, apiKey, stop };
};

/** The Seqbridge API, to set up and check what the integrations did. Throws on an error answer. */
class Api {
  constructor(url, apiKey) {
    this.url = url;
    this.apiKey = apiKey;
  }

  async request(method, apiPath, body) {
    const send = () =>
      fetch(`${this.url}${apiPath}`, {
        method,
        headers: { Authorization: `Bearer ${this.apiKey}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    // A kept-alive connection gunicorn closed while a synchronous tool (n8n execute) held the
    // event loop fails before anything is sent: send once more on a fresh one.
    const response = await send().catch(send);
    const text = await response.text();
    const parsed = text ? JSON.parse(text) : null;
    if (!response.ok) {
      throw new Error(`${method} ${apiPath} → ${response.status} ${text}`);
    }
    return parsed;
  }

  get(apiPath) {
    return this.request('GET', apiPath);
  }

  post(apiPath, body) {
    return this.request('POST', apiPath, body);
  }

  patch(apiPath, body) {
    return this.request('PATCH', apiPath, body);
  }

  /** An active sequence with one email step a day out (nothing is sent during a test). */
  async activeSequence(name) {
    const sequence = (await this.post('/api/v1/sequences', { name, from_email: 'hello@example.com' })).data;
    await this.post(`/api/v1/sequences/${sequence.id}/steps`, { channel: 'email', delay_days: 1, subject: 'Hi', body: 'Hello' });
    return (await this.patch(`/api/v1/sequences/${sequence.id}`, { status: 'active' })).data;
  }

  /** An active event queue with one add_tag step an hour out. */
  async eventQueue(name) {
    const queue = (await this.post('/api/v1/event-queues', { name })).data;
    await this.post(`/api/v1/event-queues/${queue.id}/steps`, { action_type: 'add_tag', action_config: { tag: 'queued' }, delay_minutes: 60 });
    return queue;
  }

  async contact(fields) {
    return (await this.post('/api/v1/contacts', fields)).data;
  }

  /** Make a webhook delivery go dead (see mappings/dead-end.yaml). */
  async deadDelivery(email) {
    const response = await fetch(`${this.url}/hooks/dead-end`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email }),
    });
    if (response.status !== 202) {
      throw new Error(`POST /hooks/dead-end → ${response.status} ${await response.text()}`);
    }
    return (await response.json()).data.delivery_id;
  }
}

/** A loopback HTTP server that records every request (raw body and headers) and answers 200. */
class Receiver {
  constructor() {
    this.requests = [];
    this.server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (chunk) => chunks.push(chunk));
      req.on('end', () => {
        this.requests.push({ method: req.method, path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{"ok":true}');
      });
    });
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  /** The first recorded request at `urlPath` whose JSON body satisfies `match`. */
  next(urlPath, match = () => true, timeoutMs = 20000) {
    return eventually(
      () => this.requests.find((r) => r.path === urlPath && match(JSON.parse(r.body))),
      `a notification at ${urlPath}`,
      timeoutMs,
    );
  }

  async stop() {
    await new Promise((resolve) => this.server.close(resolve));
  }
}

module.exports = { startSeqbridge, Api, Receiver, eventually, sleep, freePort, ORG };
