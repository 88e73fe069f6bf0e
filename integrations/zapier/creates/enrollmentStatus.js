'use strict';

const { call } = require('../lib/http');
const { ENROLLMENT_OUTPUTS, ENROLLMENT_SAMPLE } = require('../lib/shapes');

const perform = async (z, bundle) => {
  const { sequence_id: sequenceId, enrollment_id: enrollmentId, status } = bundle.inputData;
  const answer = await call(
    z,
    bundle,
    'PATCH',
    `/api/v1/sequences/${encodeURIComponent(sequenceId)}/enrollments/${encodeURIComponent(enrollmentId)}`,
    { body: { status } },
  );
  return answer.data;
};

module.exports = {
  key: 'enrollment_status',
  noun: 'Enrollment',
  display: {
    label: 'Pause or Resume Enrollment',
    description: 'Pauses an enrollment (the remaining delay is kept) or resumes it.',
  },
  operation: {
    inputFields: [
      { key: 'sequence_id', label: 'Sequence', required: true, dynamic: 'sequence_list.id.name' },
      { key: 'enrollment_id', label: 'Enrollment ID', required: true, type: 'string', helpText: 'From a New Enrollment trigger or the Enroll step.' },
      { key: 'status', label: 'Action', required: true, choices: { paused: 'Pause', active: 'Resume' } },
    ],
    perform,
    sample: { ...ENROLLMENT_SAMPLE, status: 'paused', paused_at: '2026-01-06T10:00:00Z' },
    outputFields: [...ENROLLMENT_OUTPUTS, { key: 'paused_at', label: 'Paused At', type: 'datetime' }],
  },
};
