"""The server's limits and timeouts, in one place (tests shorten them by patching this module)."""

READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024  # request line + headers; more is 431
FIRST_REQUEST_SECONDS = 10.0  # a new connection must send a request's first bytes within this
KEEP_ALIVE_SECONDS = 20.0  # an idle keep-alive connection is closed after this (longer than clients' 4-5 s pools)
HEADER_SECONDS = 30.0  # a started request must complete its headers within this
BODY_IDLE_SECONDS = 60.0  # a request body that stalls this long: the client is gone
MAX_DRAIN_BYTES = 256 * 1024  # an unread body up to this is read and dropped to keep the connection; more closes it
DRAIN_SECONDS = 2.0
WS_PING_SECONDS = 30.0  # a silent websocket is pinged after this, and dropped after as long again
WS_MAX_MESSAGE = 1 << 20
MAX_CONNECTIONS = 512  # open connections (firehose subscribers included); more get 503
TRUSTED_PROXIES = frozenset({"127.0.0.1", "::1"})  # whose X-Forwarded-For / -Proto are believed
