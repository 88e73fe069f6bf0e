'use strict';
// Seqbridge for Zapier: REST-hook triggers, actions and searches over the Seqbridge API.

const authentication = require('./authentication');
const { addAuthHeader, handleErrors } = require('./lib/http');
const { triggers: hookTriggers } = require('./triggers/hooks');
const { sequenceList, queueList } = require('./triggers/lists');
const contact = require('./creates/contact');
const enrollment = require('./creates/enroll');
const unenrollment = require('./creates/unenroll');
const queueEnrollment = require('./creates/queueEnroll');
const enrollmentStatus = require('./creates/enrollmentStatus');
const sequence = require('./creates/sequence');
const findContact = require('./searches/contact');
const findSequence = require('./searches/sequence');

const byKey = (list) => Object.fromEntries(list.map((item) => [item.key, item]));

module.exports = {
  version: require('./package.json').version,
  platformVersion: require('zapier-platform-core').version,

  authentication,
  beforeRequest: [addAuthHeader],
  afterResponse: [handleErrors],

  triggers: byKey([...hookTriggers, sequenceList, queueList]),
  creates: byKey([contact, enrollment, unenrollment, queueEnrollment, enrollmentStatus, sequence]),
  searches: byKey([findContact, findSequence]),
  searchOrCreates: {
    contact: {
      key: 'contact',
      display: {
        label: 'Find or Create Contact',
        description: 'Finds a contact by email or phone, or creates it.',
      },
      search: 'contact',
      create: 'contact',
    },
    sequence: {
      key: 'sequence',
      display: {
        label: 'Find or Create Sequence',
        description: 'Finds a sequence by name, or creates it as a draft.',
      },
      search: 'sequence',
      create: 'sequence',
    },
  },
};
