//! The Docker API listener's certificate: a manager certificate signed by the cluster's CA that
//! carries the `--docker-api-addr` address as an IP SAN (docker verifies the host it dials),
//! re-issued when the CA changes or the certificate nears its end.
