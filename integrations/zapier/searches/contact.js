'use strict';

const { CONTACT_OUTPUTS, CONTACT_SAMPLE, findContact } = require('../lib/contacts');

const perform = async (z, bundle) => {
  const { email, phone } = bundle.inputData;
  if (!(email && String(email).trim()) && !(phone && String(phone).trim())) {
    throw new z.errors.Error('Search by email or by phone.', 'missing_field', 400);
  }
  const contact = await findContact(z, bundle, { email, phone });
  return contact ? [contact] : [];
};

module.exports = {
  key: 'contact',
  noun: 'Contact',
  display: {
    label: 'Find Contact',
    description: 'Finds a contact by email (case-insensitive) or phone (any format; matched in E.164).',
  },
  operation: {
    inputFields: [
      { key: 'email', label: 'Email', type: 'string' },
      { key: 'phone', label: 'Phone', type: 'string', helpText: 'Tried when no contact has the email.' },
    ],
    perform,
    sample: CONTACT_SAMPLE,
    outputFields: CONTACT_OUTPUTS,
  },
};
