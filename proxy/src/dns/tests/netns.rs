//! getaddrinfo in a netns.
