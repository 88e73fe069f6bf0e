'use strict';

const { apiUrl } = require('./lib/http');

const test = async (z, bundle) => {
  const response = await z.request({ url: apiUrl(bundle, '/api/v1/me') });
  return response.data.data;
};

module.exports = {
  type: 'custom',
  fields: [
    {
      key: 'base_url',
      label: 'Seqbridge URL',
      type: 'string',
      required: true,
      helpText: 'The address of your Seqbridge server, e.g. `https://seqbridge.example.com`.',
    },
    {
      key: 'api_key',
      label: 'API Key',
      type: 'password',
      required: true,
      helpText:
        'A key that starts with `rk_live_`. Create one with `seqbridge keys create --org YOUR_ORG --scope "*" --name zapier` ' +
        '(or give it only `contacts:write`, `sequences:write`, `automations:write` and `hooks:write`).',
    },
  ],
  test,
  // bundle.inputData is what `test` returned: the key's /api/v1/me.
  connectionLabel: (z, bundle) => {
    const me = bundle.inputData || {};
    return me.key_name ? `${me.organization_name} (${me.key_name})` : me.organization_name;
  },
};
