// A plain Express 5 app.
const express = require('express');

const app = express();
const PORT = process.env.PORT || 3000;

app.get('/', (req, res) => {
  res.send(`Hello from Express pid=${process.pid} v=${process.env.APP_VERSION}\n`);
});

app.get('/health', (req, res) => {
  res.json({ status: 'ok' });
});

app.listen(PORT, () => {
  console.log(`Express app listening on port ${PORT}`);
});
