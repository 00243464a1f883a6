// A plain Fastify 5 app.
const fastify = require('fastify')({ logger: false });

const PORT = Number(process.env.PORT) || 3000;

fastify.get('/', async (request, reply) => {
  return `Hello from Fastify pid=${process.pid} v=${process.env.APP_VERSION}\n`;
});

const start = async () => {
  try {
    await fastify.listen({ port: PORT, host: '127.0.0.1' });
    console.log(`Fastify listening on port ${PORT}`);
  } catch (err) {
    fastify.log.error(err);
    console.error(err);
    process.exit(1);
  }
};
start();
