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
  const answer = await call(z, bundle, 'POST', `/api/v1/sequences/${encodeURIComponent(sequenceId)}/enroll`, { body });
  return answer.data;
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
    ],
    perform,
    sample: ENROLLMENT_SAMPLE,
    outputFields: ENROLLMENT_OUTPUTS,
  },
};
