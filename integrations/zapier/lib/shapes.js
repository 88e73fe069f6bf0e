'use strict';
// Output fields and samples shared by several triggers, actions and searches.

const ENROLLMENT_OUTPUTS = [
  { key: 'id', label: 'Enrollment ID' },
  { key: 'sequence_id', label: 'Sequence ID' },
  { key: 'contact_id', label: 'Contact ID' },
  { key: 'status', label: 'Status' },
  { key: 'next_send_at', label: 'Next Send At', type: 'datetime' },
  { key: 'enrollment_source', label: 'Source' },
  { key: 'enrolled_at', label: 'Enrolled At', type: 'datetime' },
];


const ENROLLMENT_SAMPLE = {
  id: '01f3c6f6-ab13-4dad-af1f-30bac6dcd75d',
  sequence_id: 'c6672a66-50da-483b-87be-e977d9e280c0',
  contact_id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a',
  customer_id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a',
  status: 'active',
  current_step_id: '67305c25-6503-4781-952b-473be17e0c27',
  next_send_at: '2026-01-05T09:31:00Z',
  enrollment_source: 'zapier',
  enrollment_data: { campaign: 'spring' },
  enrolled_at: '2026-01-05T09:31:00Z',
  exit_reason: null,
};


const SEQUENCE_OUTPUTS = [
  { key: 'id', label: 'Sequence ID' },
  { key: 'name', label: 'Name' },
  { key: 'status', label: 'Status' },
  { key: 'trigger_type', label: 'Trigger' },
  { key: 'total_enrolled', label: 'Total Enrolled', type: 'integer' },
  { key: 'created_at', label: 'Created At', type: 'datetime' },
];


const SEQUENCE_SAMPLE = {
  id: 'c6672a66-50da-483b-87be-e977d9e280c0',
  organization_id: '5f0c2a1e-7b3d-4c1a-9e2f-0a1b2c3d4e5f',
  name: 'Welcome',
  description: null,
  trigger_type: 'manual',
  status: 'draft',
  total_enrolled: 0,
  total_completed: 0,
  total_unsubscribed: 0,
  created_at: '2026-01-05T09:30:00Z',
};


module.exports = { ENROLLMENT_OUTPUTS, ENROLLMENT_SAMPLE, SEQUENCE_OUTPUTS, SEQUENCE_SAMPLE };
