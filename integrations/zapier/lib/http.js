'use strict';
// The one place requests to Seqbridge are built and their answers read: the base URL and the key
// from the connection, and every Seqbridge error turned into a Zapier error a person can act on.

const { version } = require('../package.json');

/** The connection's base URL without a trailing slash, e.g. `https://seqbridge.example.com`. */
const baseUrl = (bundle) => String(bundle.authData.base_url || '').trim().replace(/\/+$/, '');

/** `path` (e.g. `/api/v1/me`) on the connection's Seqbridge. */
const apiUrl = (bundle, path) => `${baseUrl(bundle)}${path}`;

const addAuthHeader = (request, z, bundle) => {
  if (bundle.authData && bundle.authData.api_key) {
    request.headers = request.headers || {};
    request.headers.Authorization = `Bearer ${String(bundle.authData.api_key).trim()}`;
    request.headers.Accept = request.headers.Accept || 'application/json';
    request.headers['User-Agent'] = `seqbridge-zapier/${version}`;
  }
  // Read 429s ourselves (below): Seqbridge's own message and Retry-After make a better error.
  request.throwForThrottlingEarly = false;
  return request;
};

/** Seqbridge answers errors as {"error": {"code", "message", "details"}}. */
const errorOf = (response) => {
  let body = response.data;
  if (body === undefined || typeof body === 'string') {
    try {
      body = JSON.parse(response.content);
    } catch (e) {
      body = null;
    }
  }
  const error = body && typeof body === 'object' ? body.error : null;
  if (error && typeof error === 'object' && error.code) {
    return error;
  }
  return { code: `http_${response.status}`, message: `Seqbridge answered HTTP ${response.status}.` };
};

/** The message a Zap run shows: Seqbridge's, with the first field problems when it gave any. */
const describe = (error) => {
  const problems = (error.details && Array.isArray(error.details.errors) && error.details.errors) || [];
  const fields = problems
    .slice(0, 3)
    .map((p) => (p && typeof p === 'object' ? [p.field || p.path, p.message].filter(Boolean).join(': ') : String(p)))
    .filter((text) => text && !error.message.includes(text));
  const reason = error.details && error.details.reason ? ` (${error.details.reason})` : '';
  return [`${error.message}${reason}`, ...fields].join(' — ');
};

/** Throws the Zapier error for a Seqbridge error answer. */
const raiseFor = (response, z) => {
  const error = errorOf(response);
  if (response.status === 429) {
    const seconds = parseInt(response.getHeader('retry-after'), 10);
    throw new z.errors.ThrottledError(describe(error), Number.isNaN(seconds) ? 60 : seconds);
  }
  if (response.status === 401) {
    // The key was revoked or mistyped: Zapier marks the connection expired and asks to reconnect.
    throw new z.errors.ExpiredAuthError(`${describe(error)} Reconnect Seqbridge with a valid API key.`);
  }
  throw new z.errors.Error(describe(error), error.code, response.status);
};

/** afterResponse: every error answer becomes a Zapier error, unless the call said it expects it. */
const handleErrors = (response, z) => {
  if (response.status >= 400 && !response.skipThrowForStatus) {
    raiseFor(response, z);
  }
  return response;
};

/**
 * One Seqbridge call: `call(z, bundle, method, path, {params, body, allow})`. Answers the
 * parsed body; statuses listed in `allow` come back as `{status, body}` instead of throwing.
 * (integrations/contract.json lists every call made this way; a test keeps the two in step.)
 */
const call = async (z, bundle, method, path, { params, body, allow = [] } = {}) => {
  const response = await z.request({
    method,
    url: apiUrl(bundle, path),
    params,
    body,
    skipThrowForStatus: allow.length > 0,
  });
  if (allow.length > 0) {
    if (response.status >= 400 && !allow.includes(response.status)) {
      raiseFor(response, z);
    }
    return { status: response.status, body: response.data };
  }
  return response.data;
};

/** Every item of an offset-paginated list (`meta.next_offset`), up to `max` items. */
const listAll = async (z, bundle, path, params = {}, max = 2000) => {
  const items = [];
  let offset = 0;
  while (offset !== null && items.length < max) {
    const page = await call(z, bundle, 'GET', path, { params: { ...params, limit: 100, offset } });
    items.push(...page.data);
    offset = page.meta.next_offset;
  }
  return items;
};

module.exports = { apiUrl, baseUrl, addAuthHeader, handleErrors, errorOf, call, listAll };
