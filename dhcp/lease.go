package dhcp

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/kiln-dev/kiln/store"
)

// leaseBucket holds one Lease per address, keyed by the dotted address.
const leaseBucket = "dhcp-leases"

// record is the in-memory form of a Lease. Records are never mutated once
// they are in the tables: a change replaces the record.
type record struct {
	mac     string // net.HardwareAddr.String() form
	addr    netip.Addr
	expires time.Time
	state   string
}

func (r *record) lease() Lease {
	return Lease{MAC: r.mac, IP: r.addr.String(), Expires: r.expires, State: r.state}
}

func (r *record) expired(now time.Time) bool { return !now.Before(r.expires) }

// load reads every lease from the store into fresh tables. Malformed
// records are skipped with a warning; of two records for one MAC the one
// that expires later wins. The caller holds s.mu or has the Server to
// itself.
func (s *Server) load() error {
	byAddr := make(map[netip.Addr]*record)
	byMAC := make(map[string]*record)
	var recs []*record
	err := s.cfg.Leases.View(func(tx store.Tx) error {
		return tx.ForEach(leaseBucket, func(key string, value []byte) error {
			r, err := decodeLease(key, value)
			if err != nil {
				s.log.Warn("skipping stored lease", "key", key, "err", err)
				return nil
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("loading dhcp leases: %w", err)
	}
	slices.SortFunc(recs, func(a, b *record) int { return a.expires.Compare(b.expires) })
	for _, r := range recs {
		if r.state != StateDeclined {
			if old := byMAC[r.mac]; old != nil {
				delete(byAddr, old.addr)
			}
			byMAC[r.mac] = r
		}
		byAddr[r.addr] = r
	}
	s.byAddr, s.byMAC = byAddr, byMAC
	s.resetHints()
	s.log.Info("loaded dhcp leases", "count", len(byAddr))
	return nil
}

// recoverTables brings the tables back in line with the store after a
// failed write: it waits, holding s.mu so that nothing new is enqueued,
// until every write enqueued before is durable or failed, then reloads.
func (s *Server) recoverTables() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.commits.enqueue(nil)() // a failure here is the same failure
	if err := s.load(); err != nil {
		s.log.Error("reloading dhcp leases after a failed write", "err", err)
	}
}

func decodeLease(key string, value []byte) (*record, error) {
	var l Lease
	if err := json.Unmarshal(value, &l); err != nil {
		return nil, fmt.Errorf("decoding lease: %w", err)
	}
	a, err := netip.ParseAddr(l.IP)
	if err != nil || !a.Is4() || key != a.String() {
		return nil, fmt.Errorf("lease address %q does not match key", l.IP)
	}
	mac, err := net.ParseMAC(l.MAC)
	if err != nil {
		return nil, fmt.Errorf("lease mac %q: %w", l.MAC, err)
	}
	switch l.State {
	case StateOffered, StateBound, StateDeclined:
	default:
		return nil, fmt.Errorf("lease state %q is unknown", l.State)
	}
	return &record{mac: mac.String(), addr: a, expires: l.Expires, state: l.State}, nil
}

// reservedForOther reports whether addr is reserved for a MAC other than mac.
func (s *Server) reservedForOther(addr netip.Addr, mac string) bool {
	r, ok := s.resByIP[addr]
	return ok && r.MAC.String() != mac
}

// free reports whether addr may be given to mac: not reserved for another
// MAC and not held by another client's unexpired record or by mac's own
// decline. The caller holds s.mu.
func (s *Server) free(addr netip.Addr, mac string, now time.Time) bool {
	if s.reservedForOther(addr, mac) {
		return false
	}
	r := s.byAddr[addr]
	return r == nil || r.expired(now) || (r.mac == mac && r.state != StateDeclined)
}

// assignable reports whether mac may hold addr on subnet sn: addr is mac's
// reservation in sn, or lies in one of sn's pools and is not reserved for
// another MAC.
func (s *Server) assignable(sn *subnet, addr netip.Addr, mac string) bool {
	if r, ok := s.resByMAC[mac]; ok && r.IP == addr {
		return sn.Prefix.Contains(addr)
	}
	return sn.inPools(addr) && !s.reservedForOther(addr, mac)
}

// pick chooses the address to offer mac on sn (RFC 2131 section 4.3.1): its
// reservation, else its current or previous address, else the requested one
// if free, else the lowest free address of sn's pools. The caller holds
// s.mu.
func (s *Server) pick(sn *subnet, mac string, requested netip.Addr, now time.Time) (netip.Addr, bool) {
	if r, ok := s.resByMAC[mac]; ok && sn.Prefix.Contains(r.IP) && s.free(r.IP, mac, now) {
		return r.IP, true
	}
	if r := s.byMAC[mac]; r != nil && s.assignable(sn, r.addr, mac) {
		return r.addr, true
	}
	if s.assignable(sn, requested, mac) && s.free(requested, mac, now) {
		return requested, true
	}
	for i, p := range sn.Pools {
		h := &sn.hints[i]
		a := p.Start
		if h.next.IsValid() && now.Before(h.until) {
			a = h.next
		} else {
			*h = poolHint{until: farFuture}
		}
		for ; p.Contains(a); a = a.Next() {
			if s.free(a, mac, now) {
				h.next = a
				return a, true
			}
			if r := s.byAddr[a]; r != nil && r.expires.Before(h.until) {
				h.until = r.expires
			}
		}
		h.next = a // the whole pool is taken
	}
	return netip.Addr{}, false
}

// farFuture is the expiry of a hint over no records.
var farFuture = time.Unix(1<<62, 0)

// poolHint speeds up the search for the lowest free address of a pool:
// every address from the pool's start up to next (excluded) is held by
// another client's record or reserved, and stays so until until, the
// earliest expiry of those records, unless one is deleted (see touch).
// Hints live in their subnet and are guarded by s.mu.
type poolHint struct {
	next  netip.Addr // zero: no hint
	until time.Time
}

// touch keeps the hints true when the record at addr changes: a deletion
// may free an address a hint skips, a put may expire sooner. The caller
// holds s.mu.
func (s *Server) touch(addr netip.Addr, put *record) {
	sn := s.subnetOf(addr)
	if sn == nil {
		return
	}
	for i, p := range sn.Pools {
		h := &sn.hints[i]
		if !p.Contains(addr) || !h.next.IsValid() || !addr.Less(h.next) {
			continue
		}
		if put == nil {
			*h = poolHint{}
		} else if put.expires.Before(h.until) {
			h.until = put.expires
		}
	}
}

// resetHints forgets every hint, after the tables were reloaded. The
// caller holds s.mu or has the Server to itself.
func (s *Server) resetHints() {
	for _, sn := range s.subnets {
		clear(sn.hints)
	}
}

// change applies put (if not nil) and the deletion of the records in drop
// to the tables at once, and enqueues the same change to the store, in one
// transaction. The caller holds s.mu and calls the returned wait after
// releasing it; if wait fails, the caller calls recoverTables.
func (s *Server) change(put *record, drop ...*record) (wait func() error) {
	var value []byte
	if put != nil {
		var err error
		if value, err = json.Marshal(put.lease()); err != nil {
			return func() error { return fmt.Errorf("encoding lease %s: %w", put.addr, err) }
		}
	}
	dels := s.apply(put, drop...)
	durable := s.commits.enqueue(func(tx store.Tx) error {
		for _, a := range dels {
			if err := tx.Delete(leaseBucket, a.String()); err != nil {
				return err
			}
		}
		if put == nil {
			return nil
		}
		return tx.Put(leaseBucket, put.addr.String(), value)
	})
	return func() error {
		if err := durable(); err != nil {
			return fmt.Errorf("persisting dhcp lease: %w", err)
		}
		return nil
	}
}

// apply changes the tables only: put (if not nil) replaces the records in
// drop. It returns the addresses whose records are gone. The caller holds
// s.mu.
//
// Offers are applied without a store write (like Kea and dnsmasq, kiln
// does not persist offers): an offer hands nothing out. A restart forgets
// them, and a client requesting a forgotten offer is NAKed and starts over;
// only an ack, written before it is sent, binds an address. Whatever the
// offer replaced in the tables is still in the store and comes back on a
// restart, which is harmless: it is the same client's old record or an
// expired one.
func (s *Server) apply(put *record, drop ...*record) (dels []netip.Addr) {
	for _, r := range drop {
		if r == nil {
			continue
		}
		if put == nil || r.addr != put.addr {
			dels = append(dels, r.addr)
		}
		if s.byAddr[r.addr] == r {
			delete(s.byAddr, r.addr)
			if put == nil || r.addr != put.addr {
				s.touch(r.addr, nil)
			}
		}
		if s.byMAC[r.mac] == r {
			delete(s.byMAC, r.mac)
		}
	}
	if put != nil {
		s.touch(put.addr, put)
		s.byAddr[put.addr] = put
		if put.state != StateDeclined {
			s.byMAC[put.mac] = put
		}
	}
	return dels
}

// Leases returns a snapshot of every lease record, including expired and
// declined ones, ordered by address.
func (s *Server) Leases() []Lease {
	s.mu.Lock()
	recs := make([]*record, 0, len(s.byAddr))
	for _, r := range s.byAddr {
		recs = append(recs, r)
	}
	s.mu.Unlock()
	slices.SortFunc(recs, func(a, b *record) int { return a.addr.Compare(b.addr) })
	out := make([]Lease, len(recs))
	for i, r := range recs {
		out[i] = r.lease()
		if res, ok := s.resByIP[r.addr]; ok && res.MAC.String() == r.mac {
			out[i].Hostname = res.Hostname
		}
	}
	return out
}

// LeaseFor returns the current lease of ip: an unexpired offered or bound
// record, else its reservation (State StateReserved, zero Expires). It is
// how an IP address seen elsewhere (a TFTP or HTTP request) is mapped to a
// MAC.
func (s *Server) LeaseFor(ip net.IP) (Lease, bool) {
	a, ok := addr4(ip)
	if !ok {
		return Lease{}, false
	}
	res, reserved := s.resByIP[a]
	s.mu.Lock()
	r := s.byAddr[a]
	s.mu.Unlock()
	if r != nil && r.state != StateDeclined && !r.expired(s.now()) {
		l := r.lease()
		if reserved && res.MAC.String() == r.mac {
			l.Hostname = res.Hostname
		}
		return l, true
	}
	if reserved {
		return Lease{MAC: res.MAC.String(), IP: a.String(), State: StateReserved, Hostname: res.Hostname}, true
	}
	return Lease{}, false
}

// Usage reports, per pool, its size and the addresses offered or bound and
// not expired. Reserved addresses count only while leased.
func (s *Server) Usage() []PoolUsage {
	now := s.now()
	var out []PoolUsage
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sn := range s.subnets {
		for _, p := range sn.Pools {
			u := PoolUsage{Subnet: sn.name, Pool: p.String(), Size: p.Size()}
			if len(s.byAddr) < u.Size {
				for a, r := range s.byAddr {
					if p.Contains(a) && r.state != StateDeclined && !r.expired(now) {
						u.InUse++
					}
				}
			} else {
				for a := p.Start; p.Contains(a); a = a.Next() {
					if r := s.byAddr[a]; r != nil && r.state != StateDeclined && !r.expired(now) {
						u.InUse++
					}
				}
			}
			out = append(out, u)
		}
	}
	return out
}
