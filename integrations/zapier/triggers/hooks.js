'use strict';
// The five REST-hook triggers. Turning a Zap on subscribes its hook URL to one Seqbridge event
// (POST /api/v1/hooks/subscriptions), turning it off unsubscribes; each notification is checked
// against the subscription's secret before the Zap runs; the editor's samples are the
// organization's latest real events of the kind (GET /api/v1/hooks/samples/{event}).

const { call } = require('../lib/http');
const { verifyNotification } = require('../lib/signature');

const ENROLLMENT_FIELDS = [
  { key: 'id', label: 'Event ID' },
  { key: 'type', label: 'Event Type' },
  { key: 'timestamp', label: 'Occurred At', type: 'datetime' },
  { key: 'data__id', label: 'Enrollment ID' },
  { key: 'data__status', label: 'Enrollment Status' },
  { key: 'data__reason', label: 'Reason' },
  { key: 'data__sequence__id', label: 'Sequence ID' },
  { key: 'data__sequence__name', label: 'Sequence Name' },
  { key: 'data__contact__id', label: 'Contact ID' },
  { key: 'data__contact__email', label: 'Contact Email' },
  { key: 'data__contact__phone', label: 'Contact Phone' },
  { key: 'data__contact__first_name', label: 'Contact First Name' },
  { key: 'data__contact__last_name', label: 'Contact Last Name' },
  { key: 'data__enrolled_at', label: 'Enrolled At', type: 'datetime' },
  { key: 'data__actor__type', label: 'Caused By (Type)' },
  { key: 'data__actor__id', label: 'Caused By (ID)' },
];

const CONTACT_FIELDS = [
  { key: 'id', label: 'Event ID' },
  { key: 'type', label: 'Event Type' },
  { key: 'timestamp', label: 'Occurred At', type: 'datetime' },
  { key: 'data__id', label: 'Contact ID' },
  { key: 'data__email', label: 'Email' },
  { key: 'data__phone', label: 'Phone' },
  { key: 'data__first_name', label: 'First Name' },
  { key: 'data__last_name', label: 'Last Name' },
  { key: 'data__status', label: 'Status' },
  { key: 'data__previous_status', label: 'Previous Status' },
  { key: 'data__actor__type', label: 'Caused By (Type)' },
  { key: 'data__actor__id', label: 'Caused By (ID)' },
];

const DELIVERY_FIELDS = [
  { key: 'id', label: 'Event ID' },
  { key: 'type', label: 'Event Type' },
  { key: 'timestamp', label: 'Occurred At', type: 'datetime' },
  { key: 'data__id', label: 'Delivery ID' },
  { key: 'data__hook', label: 'Hook' },
  { key: 'data__attempts', label: 'Attempts', type: 'integer' },
  { key: 'data__error', label: 'Last Error' },
];

const ENROLLMENT_SAMPLE = {
  id: '6c1f0a4e-2b7d-5e8f-9a0b-1c2d3e4f5a6b',
  type: 'enrollment.created',
  timestamp: '2026-01-05T09:30:00Z',
  data: {
    id: '01f3c6f6-ab13-4dad-af1f-30bac6dcd75d',
    sequence_id: 'c6672a66-50da-483b-87be-e977d9e280c0',
    contact_id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a',
    status: 'active',
    reason: null,
    enrolled_at: '2026-01-05T09:30:00Z',
    sequence: { id: 'c6672a66-50da-483b-87be-e977d9e280c0', name: 'Welcome' },
    contact: {
      id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a',
      email: 'ada@example.com',
      phone: '+16505551234',
      first_name: 'Ada',
      last_name: 'Lovelace',
      status: 'active',
    },
    actor: { type: 'api_key', id: '4e7c3cb3-b8f4-4d48-be65-d2dc53209485' },
  },
};

const CONTACT_SAMPLE = {
  id: '7d2e1b5f-3c8e-5f90-ab1c-2d3e4f5a6b7c',
  type: 'contact.unsubscribed',
  timestamp: '2026-01-07T14:02:00Z',
  data: {
    id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a',
    email: 'ada@example.com',
    phone: '+16505551234',
    first_name: 'Ada',
    last_name: 'Lovelace',
    status: 'unsubscribed',
    previous_status: 'active',
    actor: { type: 'hook', id: 'whatsapp' },
  },
};

const DELIVERY_SAMPLE = {
  id: '8e3f2c6a-4d9f-5a01-bc2d-3e4f5a6b7c8d',
  type: 'delivery.dead',
  timestamp: '2026-01-07T14:02:00Z',
  data: {
    id: '0e2f4a6c-8b1d-4e3f-a5c7-9d0b2e4f6a81',
    hook: 'zapier',
    status: 'dead',
    attempts: 8,
    error: 'HTTP 503 from crm',
    actor: { type: 'worker', id: 'host:1234' },
  },
};

const sequenceFilter = {
  key: 'sequence_id',
  label: 'Sequence',
  dynamic: 'sequence_list.id.name',
  required: false,
  altersDynamicFields: false,
  helpText: 'Only for this sequence. Leave empty for every sequence.',
};

/** Notifications the Zap's sequence filter lets through. */
const matches = (bundle, notification) =>
  !bundle.inputData.sequence_id ||
  !notification.data ||
  notification.data.sequence_id === bundle.inputData.sequence_id ||
  (notification.data.sequence && notification.data.sequence.id === bundle.inputData.sequence_id);

const hookTrigger = ({ key, event, noun, label, description, filterBySequence, outputFields, sample }) => ({
  key,
  noun,
  display: { label, description },
  operation: {
    type: 'hook',
    inputFields: filterBySequence ? [sequenceFilter] : [],
    performSubscribe: (z, bundle) =>
      call(z, bundle, 'POST', '/api/v1/hooks/subscriptions', {
        body: { target_url: bundle.targetUrl, event },
      }).then((answer) => answer.data),
    performUnsubscribe: async (z, bundle) => {
      // 404: Seqbridge already dropped it (the hook URL answered 410 Gone, or someone deleted it).
      const { status } = await call(
        z,
        bundle,
        'DELETE',
        `/api/v1/hooks/subscriptions/${encodeURIComponent(bundle.subscribeData.id)}`,
        { allow: [404] },
      );
      return { id: bundle.subscribeData.id, unsubscribed: status === 204 || status === 404 };
    },
    perform: (z, bundle) => {
      verifyNotification(z, bundle);
      const notification = bundle.cleanedRequest || {};
      if (notification.type !== event) {
        return []; // not what this Zap subscribed to: nothing to run
      }
      return matches(bundle, notification) ? [notification] : [];
    },
    performList: async (z, bundle) => {
      const samples = await call(z, bundle, 'GET', `/api/v1/hooks/samples/${event}`);
      return samples.data.filter((notification) => matches(bundle, notification));
    },
    sample,
    outputFields,
  },
});

const EVENTS = [
  {
    key: 'new_enrollment',
    event: 'enrollment.created',
    noun: 'Enrollment',
    label: 'New Enrollment',
    description: 'Triggers when a contact is enrolled in a sequence or event queue.',
    filterBySequence: true,
    outputFields: ENROLLMENT_FIELDS,
    sample: ENROLLMENT_SAMPLE,
  },
  {
    key: 'enrollment_completed',
    event: 'enrollment.completed',
    noun: 'Enrollment',
    label: 'Enrollment Completed',
    description: 'Triggers when a contact finishes every step of a sequence (or is unenrolled by a bot).',
    filterBySequence: true,
    outputFields: ENROLLMENT_FIELDS,
    sample: { ...ENROLLMENT_SAMPLE, type: 'enrollment.completed', data: { ...ENROLLMENT_SAMPLE.data, status: 'completed', reason: 'finished' } },
  },
  {
    key: 'enrollment_exited',
    event: 'enrollment.exited',
    noun: 'Enrollment',
    label: 'Enrollment Exited',
    description: 'Triggers when a contact leaves a sequence early: replied, converted, unsubscribed, bounced or removed.',
    filterBySequence: true,
    outputFields: ENROLLMENT_FIELDS,
    sample: { ...ENROLLMENT_SAMPLE, type: 'enrollment.exited', data: { ...ENROLLMENT_SAMPLE.data, status: 'exited', reason: 'replied' } },
  },
  {
    key: 'contact_unsubscribed',
    event: 'contact.unsubscribed',
    noun: 'Contact',
    label: 'Contact Unsubscribed',
    description: 'Triggers when a contact unsubscribes (or is marked unsubscribed).',
    filterBySequence: false,
    outputFields: CONTACT_FIELDS,
    sample: CONTACT_SAMPLE,
  },
  {
    key: 'delivery_dead',
    event: 'delivery.dead',
    noun: 'Delivery',
    label: 'Webhook Delivery Failed',
    description: 'Triggers when an incoming webhook could not be processed after every retry (a dead delivery).',
    filterBySequence: false,
    outputFields: DELIVERY_FIELDS,
    sample: DELIVERY_SAMPLE,
  },
];

const triggers = EVENTS.map(hookTrigger);

module.exports = { triggers, EVENTS };
