//! Ports for the Proxmox VE tests, whose container stand-ins share this machine's network.

/// A free TCP port on `ip` a moment ago.
pub fn free_port_on(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// The first of `count` ports in a row free on every address a moment ago: the agents'
/// health ports (`deployment.health.port` and up), which they bind on all addresses.
pub fn free_ports(count: u16) -> u16 {
    loop {
        let first = free_port_on("0.0.0.0");
        if first < 65535 - count && (1..count).all(|i| std::net::TcpListener::bind(("0.0.0.0", first + i)).is_ok()) {
            return first;
        }
    }
}
