//! Loader tests over whole files, and the corpus of public stack files.
