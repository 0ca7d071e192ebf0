//! dig and dnsmasq tests.
