'use strict';

const { call } = require('../lib/http');
const { CONTACT_INPUTS, CONTACT_OUTPUTS, CONTACT_SAMPLE, contactFields, findContact } = require('../lib/contacts');

/** Update `existing` with the given fields: tags are added, attributes merged, the rest set. */
const update = async (z, bundle, existing, fields) => {
  const { tags, attributes, ...rest } = fields;
  let contact = existing;
  const changes = { ...rest };
  if (attributes) {
    changes.attributes = { ...(existing.attributes || {}), ...attributes };
  }
  if (Object.keys(changes).length) {
    contact = (await call(z, bundle, 'PATCH', `/api/v1/contacts/${encodeURIComponent(existing.id)}`, { body: changes })).data;
  }
  const newTags = (tags || []).filter((t) => !(contact.tags || []).includes(t));
  if (newTags.length) {
    contact = (await call(z, bundle, 'POST', `/api/v1/contacts/${encodeURIComponent(existing.id)}/tags`, { body: { tags: newTags } })).data;
  }
  return { ...contact, result: 'updated' };
};

const perform = async (z, bundle) => {
  const fields = contactFields(bundle.inputData);
  if (!fields.email && !fields.phone) {
    throw new z.errors.Error('A contact needs an email or a phone number.', 'missing_field', 400);
  }
  const existing = await findContact(z, bundle, fields);
  if (existing) {
    return update(z, bundle, existing, fields);
  }
  const created = await call(z, bundle, 'POST', '/api/v1/contacts', { body: fields, allow: [409] });
  if (created.status === 409) {
    // Made by someone else since we looked (email_taken): update that one instead.
    const winner = await findContact(z, bundle, fields);
    if (!winner) {
      throw new z.errors.Error(created.body.error.message, created.body.error.code, 409);
    }
    return update(z, bundle, winner, fields);
  }
  return { ...created.body.data, result: 'created' };
};

module.exports = {
  key: 'contact',
  noun: 'Contact',
  display: {
    label: 'Create or Update Contact',
    description:
      'Creates a contact, or updates the one with the same email (or phone). New tags are added; a contact_created or tag_added sequence may enroll it.',
  },
  operation: {
    inputFields: CONTACT_INPUTS,
    perform,
    sample: { ...CONTACT_SAMPLE, result: 'created' },
    outputFields: [...CONTACT_OUTPUTS, { key: 'result', label: 'Created or Updated' }],
  },
};
