'use strict';

const { call } = require('../lib/http');
const { SEQUENCE_OUTPUTS, SEQUENCE_SAMPLE } = require('../lib/shapes');

const perform = async (z, bundle) => {
  const body = { name: String(bundle.inputData.name).trim() };
  for (const key of ['description', 'from_email', 'from_name', 'reply_to_email']) {
    if (bundle.inputData[key]) {
      body[key] = String(bundle.inputData[key]).trim();
    }
  }
  return (await call(z, bundle, 'POST', '/api/v1/sequences', { body })).data;
};

module.exports = {
  key: 'sequence',
  noun: 'Sequence',
  display: {
    label: 'Create Sequence',
    description: 'Creates a sequence as a draft: add its steps and activate it in Seqbridge before enrolling anyone.',
  },
  operation: {
    inputFields: [
      { key: 'name', label: 'Name', required: true, type: 'string' },
      { key: 'description', label: 'Description', type: 'text' },
      { key: 'from_email', label: 'From Email', type: 'string' },
      { key: 'from_name', label: 'From Name', type: 'string' },
      { key: 'reply_to_email', label: 'Reply-To Email', type: 'string' },
    ],
    perform,
    sample: SEQUENCE_SAMPLE,
    outputFields: SEQUENCE_OUTPUTS,
  },
};
