"""PostgreSQL's fast path: binary COPY (``pgbinary`` encodes the wire format, ``pgcopy`` streams
it). Private to the load and link stages: nothing else speaks this protocol."""
