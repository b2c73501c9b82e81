//! docker's `ServiceSpec`/`TaskSpec` JSON ⇄ Shoal's `ServiceSpec`: every field docker sends is
//! either carried into Shoal's spec (and shown back by inspect) or refused with a 400 naming it;
//! zero values and empty objects the CLI always sends are accepted as unset.
