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
 * secret, or its webhook-timestamp is more than five minutes from now (the library compares
 * signatures in constant time). Fails closed: with no secret stored for the subscription or no
 * raw body to check, nothing runs either.
 */
const verifyNotification = (z, bundle) => {
  const refuse = (why) => {
    throw new z.errors.Error(`Refused a notification that is not signed by Seqbridge: ${why}`, 'invalid_signature', 401);
  };
  const secret = bundle.subscribeData && bundle.subscribeData.secret;
  const raw = bundle.rawRequest;
  const body = raw && (typeof raw.content === 'string' ? raw.content : typeof raw.body === 'string' ? raw.body : null);
  if (!secret) {
    refuse('this Zap holds no subscription secret. Turn the Zap off and on again to subscribe anew.');
  }
  if (body === null) {
    refuse('the request has no body to check.');
  }
  try {
    new Webhook(secret).verify(body, webhookHeaders(raw.headers));
  } catch (error) {
    refuse(error.message);
  }
};

module.exports = { verifyNotification, webhookHeaders };
