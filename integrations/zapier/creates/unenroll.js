'use strict';

const { call } = require('../lib/http');
const { resolveContactId } = require('../lib/contacts');

const REASONS = {
  manual: 'Manual',
  replied: 'Replied',
  converted: 'Converted',
  unsubscribed: 'Unsubscribed',
  bounced: 'Bounced',
};

const perform = async (z, bundle) => {
  const contactId = await resolveContactId(z, bundle, bundle.inputData);
  const body = { reason: bundle.inputData.reason || 'manual' };
  if (bundle.inputData.sequence_id) {
    body.sequence_id = bundle.inputData.sequence_id;
  }
  const answer = await call(z, bundle, 'POST', `/api/v1/contacts/${encodeURIComponent(contactId)}/unenroll`, { body });
  const ended = answer.data;
  return {
    id: contactId,
    contact_id: contactId,
    enrollments_ended: ended.enrollments_ended,
    enrollment_ids: ended.enrollments.map((e) => e.id),
    sequence_ids: ended.enrollments.map((e) => e.sequence_id),
    reason: body.reason,
  };
};

module.exports = {
  key: 'unenrollment',
  noun: 'Enrollment',
  display: {
    label: 'Unenroll Contact',
    description: 'Ends a contact\'s enrollment in one sequence, or in every sequence and event queue, with a reason. Pending steps are cancelled.',
  },
  operation: {
    inputFields: [
      { key: 'email', label: 'Contact Email', type: 'string', helpText: 'The contact to unenroll. Use this or Contact ID.' },
      { key: 'contact_id', label: 'Contact ID', type: 'string' },
      { key: 'sequence_id', label: 'Sequence', required: false, dynamic: 'sequence_list.id.name', helpText: 'Leave empty to unenroll from every sequence and event queue.' },
      { key: 'reason', label: 'Reason', required: true, choices: REASONS, default: 'manual' },
    ],
    perform,
    sample: {
      id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a',
      contact_id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a',
      enrollments_ended: 1,
      enrollment_ids: ['01f3c6f6-ab13-4dad-af1f-30bac6dcd75d'],
      sequence_ids: ['c6672a66-50da-483b-87be-e977d9e280c0'],
      reason: 'replied',
    },
    outputFields: [
      { key: 'contact_id', label: 'Contact ID' },
      { key: 'enrollments_ended', label: 'Enrollments Ended', type: 'integer' },
      { key: 'enrollment_ids', label: 'Enrollment IDs' },
      { key: 'sequence_ids', label: 'Sequence IDs' },
      { key: 'reason', label: 'Reason' },
    ],
  },
};
