#!/usr/bin/perl
# A small HTTP/1.1 server in core Perl that knows nothing of hotswap: it
# serves the socket systemd-style (fd 3, LISTEN_FDS), forks a process per
# connection, keeps connections alive, and drains on SIGTERM. Run it
# unchanged:
#
#   hotswap run -l 127.0.0.1:8080 -w 2 -- perl contrib/apps/perl/server.pl
#
# hotswap sees it ready when its main process blocks in accept() on fd 3
# (--ready auto, the default). On SIGTERM the main process stops accepting
# (the socket stays open for the other workers) and passes SIGTERM to its
# connection processes, which answer their connection's next request with
# `Connection: close`, close a connection that stays idle for GRACE
# seconds, and exit; the main process exits when the last one has.
use strict;
use warnings;
use IO::Handle;
use IO::Select;
use IO::Socket::INET;
use POSIX ();

my $GRACE = 1.0;    # how long a draining connection may stay idle
my $BODY = sprintf "generation=%s worker=%s pid=%d\n",
    $ENV{HOTSWAP_GENERATION} // 0, $ENV{HOTSWAP_WORKER_ID} // 0, $$;

my $fds = $ENV{LISTEN_FDS} // 0;
die "server.pl: no socket passed (LISTEN_FDS is not set)\n" unless $fds >= 1;
die "server.pl: the sockets are for pid $ENV{LISTEN_PID}, not $$\n"
    if defined $ENV{LISTEN_PID} && $ENV{LISTEN_PID} != $$;
my $listener = IO::Socket::INET->new_from_fd(3, 'r')
    or die "server.pl: fd 3 is not a socket: $!\n";
$listener->blocking(1);    # wait in accept(), where hotswap sees it

my $stopping = 0;
my %kids;
# Without SA_RESTART, so that a signal interrupts accept() and wait().
POSIX::sigaction(POSIX::SIGTERM(), POSIX::SigAction->new(sub { $stopping = 1 }));
POSIX::sigaction(POSIX::SIGCHLD(), POSIX::SigAction->new(sub {}));

print "server.pl: serving fd 3, pid $$\n";
STDOUT->flush;
until ($stopping) {
    reap();
    my $conn = $listener->accept or next;    # EINTR: look at the flag again
    my $pid = fork;
    if (!defined $pid) {
        warn "server.pl: fork: $!\n";
        close $conn;
        next;
    }
    if ($pid == 0) {
        close $listener;    # the SIGTERM handler is inherited
        serve($conn);
        POSIX::_exit(0);
    }
    $kids{$pid} = 1;
    close $conn;
}
close $listener;    # our copy; the socket stays open for the other workers
kill 'TERM', keys %kids;
while (%kids) {
    my $pid = waitpid(-1, 0);
    last if $pid == -1 && !$!{EINTR};
    delete $kids{$pid} if $pid > 0;
}
print "server.pl: drained\n";
exit 0;

sub reap {
    while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
        delete $kids{$pid};
    }
}

# Serves one connection: requests without a body (GET, HEAD), kept alive
# until the client says close or the server is stopping.
sub serve {
    my ($conn) = @_;
    my $select = IO::Select->new($conn);
    my $buf = '';
    my $idle_since;
    while (1) {
        my $end = index $buf, "\r\n\r\n";
        if ($end < 0) {
            # Waiting for (the rest of) a request: while stopping, for at
            # most GRACE seconds of silence.
            if ($stopping) {
                $idle_since //= time;
                last if $buf eq '' && time - $idle_since >= $GRACE;
            }
            next unless $select->can_read($stopping ? 0.1 : 0.5);
            my $n = sysread $conn, $buf, 65536, length $buf;
            next if !defined $n && $!{EINTR};
            last unless $n;    # closed by the client, or an error
            next;
        }
        my $head = substr $buf, 0, $end + 4, '';
        my ($version) = $head =~ m{^\S+ \S+ (HTTP/1\.[01])\r\n};
        my $close = $stopping || !$version || $head =~ /^connection:\s*close/im
            || ($version eq 'HTTP/1.0' && $head !~ /^connection:\s*keep-alive/im);
        my $response = sprintf "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            . "Content-Length: %d\r\nConnection: %s\r\n\r\n%s",
            length $BODY, $close ? 'close' : 'keep-alive', $BODY;
        last unless write_all($conn, $response);
        last if $close;
        $idle_since = undef;
    }
    close $conn;
}

sub write_all {
    my ($conn, $data) = @_;
    while (length $data) {
        my $n = syswrite $conn, $data;
        if (!defined $n) {
            next if $!{EINTR};
            return 0;
        }
        substr $data, 0, $n, '';
    }
    return 1;
}
