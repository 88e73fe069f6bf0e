'use strict';

const { listAll } = require('../lib/http');
const { SEQUENCE_OUTPUTS, SEQUENCE_SAMPLE } = require('../lib/shapes');

const perform = async (z, bundle) => {
  const wanted = String(bundle.inputData.name || '').trim().toLowerCase();
  const params = bundle.inputData.status ? { status: bundle.inputData.status } : {};
  const sequences = await listAll(z, bundle, '/api/v1/sequences', params);
  // Exact names first (case-insensitive), then names that contain the text.
  const exact = sequences.filter((s) => s.name.trim().toLowerCase() === wanted);
  return exact.length ? exact : sequences.filter((s) => s.name.toLowerCase().includes(wanted));
};

module.exports = {
  key: 'sequence',
  noun: 'Sequence',
  display: {
    label: 'Find Sequence',
    description: 'Finds a sequence by name: an exact match (ignoring case) first, else one whose name contains it.',
  },
  operation: {
    inputFields: [
      { key: 'name', label: 'Name', required: true, type: 'string' },
      { key: 'status', label: 'Status', required: false, choices: { active: 'Active', paused: 'Paused', draft: 'Draft', archived: 'Archived' } },
    ],
    perform,
    sample: SEQUENCE_SAMPLE,
    outputFields: SEQUENCE_OUTPUTS,
  },
};
