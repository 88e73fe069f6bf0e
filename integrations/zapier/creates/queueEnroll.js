'use strict';

const { call } = require('../lib/http');
const { findContact } = require('../lib/contacts');

const MAX = 500; // what one bulk-enroll call takes

const perform = async (z, bundle) => {
  const { queue_id: queueId, contact_ids: ids, emails, enrollment_time: anchor, deal_id: dealId } = bundle.inputData;
  const contactIds = [].concat(ids || []).map((v) => String(v).trim()).filter(Boolean);
  const unknownEmails = [];
  for (const email of [].concat(emails || []).map((v) => String(v).trim()).filter(Boolean)) {
    const contact = await findContact(z, bundle, { email });
    if (contact) {
      contactIds.push(contact.id);
    } else {
      unknownEmails.push(email);
    }
  }
  if (!contactIds.length) {
    const detail = unknownEmails.length ? ` (no contact has ${unknownEmails.join(', ')})` : '';
    throw new z.errors.Error(`No contact to add to the queue${detail}.`, 'missing_field', 400);
  }
  if (contactIds.length > MAX) {
    throw new z.errors.Error(`At most ${MAX} contacts per step (got ${contactIds.length}).`, 'too_many_contacts', 400);
  }
  const body = { contact_ids: [...new Set(contactIds)], enrollment_source: 'zapier' };
  if (anchor) {
    body.enrollment_time = anchor;
  }
  if (dealId) {
    body.deal_id = String(dealId);
  }
  const answer = await call(z, bundle, 'POST', `/api/v1/event-queues/${encodeURIComponent(queueId)}/bulk-enroll`, { body });
  const result = answer.data;
  return {
    id: `${queueId}:${Date.now()}`,
    queue_id: queueId,
    enrolled: result.enrolled,
    skipped: result.skipped + unknownEmails.length,
    results: result.results,
    unknown_emails: unknownEmails,
  };
};

module.exports = {
  key: 'queue_enrollment',
  noun: 'Event Queue Enrollment',
  display: {
    label: 'Add Contacts to Event Queue',
    description: 'Adds contacts (by ID or email) to an event queue, which plans all its steps for each. Contacts already waiting in the queue are skipped.',
  },
  operation: {
    inputFields: [
      { key: 'queue_id', label: 'Event Queue', required: true, dynamic: 'queue_list.id.name' },
      { key: 'contact_ids', label: 'Contact IDs', type: 'string', list: true },
      { key: 'emails', label: 'Contact Emails', type: 'string', list: true, helpText: 'Each is looked up; unknown emails are reported, not errors.' },
      { key: 'enrollment_time', label: 'Anchor Time', type: 'datetime', helpText: 'Step delays count from this moment (default: now).' },
      { key: 'deal_id', label: 'Deal ID', type: 'string', helpText: 'A CRM deal to link the enrollments to.' },
    ],
    perform,
    sample: {
      id: '3c2b1a09-8f7e-4d6c-b5a4-938271605f4e:1767605400000',
      queue_id: '3c2b1a09-8f7e-4d6c-b5a4-938271605f4e',
      enrolled: 1,
      skipped: 1,
      results: [
        { contact_id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a', status: 'enrolled', enrollment_id: '01f3c6f6-ab13-4dad-af1f-30bac6dcd75d' },
        { contact_id: '5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d', status: 'skipped', code: 'already_enrolled', reason: 'Already enrolled.' },
      ],
      unknown_emails: [],
    },
    outputFields: [
      { key: 'queue_id', label: 'Event Queue ID' },
      { key: 'enrolled', label: 'Enrolled', type: 'integer' },
      { key: 'skipped', label: 'Skipped', type: 'integer' },
      { key: 'unknown_emails', label: 'Unknown Emails' },
    ],
  },
};
