// A Socket.IO 4 app as its own guide writes it: an http server, a Socket.IO
// server on it, `listen(PORT)`. Nothing in it knows about hotswap. Its state
// lives in this process's memory, as Socket.IO's sessions do: the
// long-polling handshake is several HTTP requests, and every one of them
// must reach the process that holds the session ("Session ID unknown"
// otherwise).
const http = require('http');
const { Server } = require('socket.io');

const PORT = process.env.PORT || 3000;

const httpServer = http.createServer((req, res) => {
  res.end(`socket.io app pid=${process.pid}\n`);
});
const io = new Server(httpServer);

// In-memory state: how many messages this process has echoed.
let echoed = 0;

io.on('connection', (socket) => {
  socket.on('echo', (msg, ack) => {
    echoed += 1;
    // The address the handshake came from: the client checks that its own
    // source address took effect.
    ack({ msg, pid: process.pid, address: socket.handshake.address, echoed });
  });
});

httpServer.listen(PORT, () => {
  console.log(`socket.io app listening on port ${PORT}`);
});
