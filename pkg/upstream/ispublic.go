package upstream

import "net/netip"

// IsPublic reports whether addr is a globally routable unicast address that
// an unlisted upstream may be dialled at. Everything else (loopback, private,
// CGNAT, link-local, multicast, documentation and benchmarking ranges,
// reserved space, and IPv6 forms that embed such an IPv4 address) is not.
//
// IPv6 is an allow-list: only 2000::/3 (global unicast) minus special-purpose
// blocks counts, plus the well-known NAT64 and IPv4-mapped forms of a public
// IPv4 address. New special ranges outside 2000::/3 are therefore refused by
// default.
func IsPublic(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.WithZone("")
	if addr.Is4In6() { // ::ffff:a.b.c.d is dialled as a.b.c.d
		return publicV4(addr.Unmap())
	}
	if addr.Is4() {
		return publicV4(addr)
	}
	return publicV6(addr)
}

func publicV4(a netip.Addr) bool {
	for _, p := range nonPublicV4() {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

func publicV6(a netip.Addr) bool {
	b := a.As16()
	switch {
	case prefix("64:ff9b::/96").Contains(a): // NAT64 well-known prefix (RFC 6052)
		return publicV4(netip.AddrFrom4([4]byte(b[12:16])))
	case prefix("2002::/16").Contains(a): // 6to4 (RFC 3056) embeds the IPv4 address
		return publicV4(netip.AddrFrom4([4]byte(b[2:6])))
	case !prefix("2000::/3").Contains(a): // not global unicast
		return false
	}
	for _, p := range nonPublicV6() {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// The tables are built per call (no package-level mutable state); parsing a
// few prefixes costs far less than the dial it guards.
func nonPublicV4() [15]netip.Prefix {
	return [...]netip.Prefix{
		prefix("0.0.0.0/8"),       // "this network", includes unspecified
		prefix("10.0.0.0/8"),      // private
		prefix("100.64.0.0/10"),   // CGNAT shared address space
		prefix("127.0.0.0/8"),     // loopback
		prefix("169.254.0.0/16"),  // link-local, cloud metadata
		prefix("172.16.0.0/12"),   // private
		prefix("192.0.0.0/24"),    // IETF protocol assignments
		prefix("192.0.2.0/24"),    // TEST-NET-1
		prefix("192.88.99.0/24"),  // deprecated 6to4 relay anycast
		prefix("192.168.0.0/16"),  // private
		prefix("198.18.0.0/15"),   // benchmarking
		prefix("198.51.100.0/24"), // TEST-NET-2
		prefix("203.0.113.0/24"),  // TEST-NET-3
		prefix("224.0.0.0/4"),     // multicast
		prefix("240.0.0.0/4"),     // reserved, includes 255.255.255.255
	}
}

// Special-purpose blocks inside 2000::/3; everything outside it (::, ::1,
// ::/96, 100::/64, 64:ff9b:1::/48, fc00::/7, fe80::/10, fec0::/10, ff00::/8,
// 5f00::/16...) is already refused by the allow-list.
func nonPublicV6() [3]netip.Prefix {
	return [...]netip.Prefix{
		prefix("2001::/23"),     // IETF protocol assignments: Teredo, benchmarking, ORCHID
		prefix("2001:db8::/32"), // documentation
		prefix("3fff::/20"),     // documentation (RFC 9637)
	}
}

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
