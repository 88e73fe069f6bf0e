'use strict';

const { call } = require('../lib/http');
const { resolveContactId } = require('../lib/contacts');
const { ENROLLMENT_OUTPUTS, ENROLLMENT_SAMPLE } = require('../lib/shapes');

const perform = async (z, bundle) => {
  const { sequence_id: sequenceId, email, contact_id: contactId, enrollment_source: source, enrollment_data: data } = bundle.inputData;
  const body = { enrollment_source: (source && String(source).trim()) || 'zapier' };
  // By id when given, else by email: Seqbridge resolves the email itself (404 when unknown).
  if (contactId && String(contactId).trim()) {
    body.contact_id = String(contactId).trim();
  } else if (email && String(email).trim()) {
    body.email = String(email).trim();
  } else {
    await resolveContactId(z, bundle, {}); // throws the "give an email or an id" error
  }
  if (data && typeof data === 'object' && Object.keys(data).length) {
    body.enrollment_data = data;
  }
  const sequence = encodeURIComponent(sequenceId);
  const answer = await call(z, bundle, 'POST', `/api/v1/sequences/${sequence}/enroll`, { body, allow: [409] });
  if (answer.status !== 409) {
    return { ...answer.body.data, already_enrolled: false };
  }
  // Already enrolled: a replayed Zap step (or a contact that is simply in the sequence) gets the
  // live enrollment back, unless the Zap asked to stop. Seqbridge names it in the 409.
  const error = answer.body.error || {};
  const liveId = error.details && error.details.enrollment_id;
  if (error.code !== 'already_enrolled' || !liveId || bundle.inputData.if_enrolled === 'error') {
    throw new z.errors.Error(error.message || 'Seqbridge answered HTTP 409.', error.code || 'http_409', 409);
  }
  const live = await call(z, bundle, 'GET', `/api/v1/sequences/${sequence}/enrollments/${encodeURIComponent(liveId)}`);
  return { ...live.data, already_enrolled: true };
};

module.exports = {
  key: 'enrollment',
  noun: 'Enrollment',
  display: {
    label: 'Enroll Contact in Sequence',
    description: 'Enrolls a contact (by email or contact ID) in a sequence; its first step is scheduled at once.',
  },
  operation: {
    inputFields: [
      { key: 'sequence_id', label: 'Sequence', required: true, dynamic: 'sequence_list.id.name', helpText: 'Draft and archived sequences refuse enrollments.' },
      { key: 'email', label: 'Contact Email', type: 'string', helpText: 'The contact to enroll. Use this or Contact ID.' },
      { key: 'contact_id', label: 'Contact ID', type: 'string', helpText: 'Seqbridge contact ID; wins over the email when both are given.' },
      { key: 'enrollment_source', label: 'Source', type: 'string', default: 'zapier', helpText: 'Recorded on the enrollment.' },
      { key: 'enrollment_data', label: 'Enrollment Data', dict: true, helpText: 'Free-form data kept on the enrollment, e.g. `campaign` → `spring`.' },
      {
        key: 'if_enrolled',
        label: 'If Already Enrolled',
        required: false,
        choices: { return: 'Return the current enrollment', error: 'Stop with an error' },
        default: 'return',
        helpText:
          'When the contact is already active or paused in this sequence. "Return the current enrollment" also makes a replayed step safe: it never enrolls twice.',
      },
    ],
    perform,
    sample: { ...ENROLLMENT_SAMPLE, already_enrolled: false },
    outputFields: [...ENROLLMENT_OUTPUTS, { key: 'already_enrolled', label: 'Was Already Enrolled', type: 'boolean' }],
  },
};
