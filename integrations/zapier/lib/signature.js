'use strict';
// Seqbridge signs every REST hook notification with Standard Webhooks (webhook-id,
// webhook-timestamp, webhook-signature) under the subscription's secret, which Seqbridge shows
// once, in the subscribe answer; Zapier keeps that answer as bundle.subscribeData.

const { Webhook } = require('standardwebhooks');

/** Header names as Standard Webhooks spells them; Zapier hands them over as `Http-Webhook-Id`. */
const webhookHeaders = (raw) => {
  const headers = {};
  for (const [name, value] of Object.entries(raw || {})) {
    headers[name.toLowerCase().replace(/^http-/, '')] = Array.isArray(value) ? value[0] : value;
  }
  return headers;
};

/**
 * Throws when the notification in `bundle.rawRequest` is not signed with the subscription's
 * secret (or is older than five minutes). Without a stored secret (a subscription made before
 * Seqbridge answered one) or without the raw body, there is nothing to check against.
 */
const verifyNotification = (z, bundle) => {
  const secret = bundle.subscribeData && bundle.subscribeData.secret;
  const raw = bundle.rawRequest;
  const body = raw && (typeof raw.content === 'string' ? raw.content : typeof raw.body === 'string' ? raw.body : null);
  if (!secret || body === null) {
    return;
  }
  try {
    new Webhook(secret).verify(body, webhookHeaders(raw.headers));
  } catch (error) {
    throw new z.errors.Error(
      `Refused a notification that is not signed by Seqbridge: ${error.message}`,
      'invalid_signature',
      401,
    );
  }
};

module.exports = { verifyNotification, webhookHeaders };
