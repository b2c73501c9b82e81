//! The listeners: TLS on `--docker-api-addr` (client certificates checked against the cluster's
//! admin credentials, as the gRPC API does) and the unix socket `--docker-api-socket` (0660,
//! root); `/vX.Y` prefixes, docker's response headers.
