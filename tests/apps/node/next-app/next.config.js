// The app's node_modules is its parent directory's (tests/apps/node), where
// Turbopack would not look without being told.
const path = require('path');

module.exports = { turbopack: { root: path.join(__dirname, '..') } };
