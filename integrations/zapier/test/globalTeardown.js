'use strict';

module.exports = async () => {
  if (globalThis.__SEQBRIDGE__) {
    await globalThis.__SEQBRIDGE__.stop();
  }
};
