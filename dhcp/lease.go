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

// load reads every lease from the store. Malformed records are skipped with a
// warning; of two records for one MAC the one that expires later wins.
func (s *Server) load() error {
	s.byAddr = make(map[netip.Addr]*record)
	s.byMAC = make(map[string]*record)
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
			if old := s.byMAC[r.mac]; old != nil {
				delete(s.byAddr, old.addr)
			}
			s.byMAC[r.mac] = r
		}
		s.byAddr[r.addr] = r
	}
	s.log.Info("loaded dhcp leases", "count", len(s.byAddr))
	return nil
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

// free reports whether addr may be given to mac. The caller holds s.mu.
func (s *Server) free(addr netip.Addr, mac string, now time.Time) bool {
	r := s.byAddr[addr]
	return r == nil || r.expired(now) || (r.mac == mac && r.state != StateDeclined)
}

// pick chooses the address to offer mac (RFC 2131 section 4.3.1): its current
// or previous address, else the requested one if free, else the lowest free
// address of the pool. The caller holds s.mu.
func (s *Server) pick(mac string, requested netip.Addr, now time.Time) (netip.Addr, bool) {
	if r := s.byMAC[mac]; r != nil && s.inRange(r.addr) {
		return r.addr, true
	}
	if s.inRange(requested) && s.free(requested, mac, now) {
		return requested, true
	}
	for a := s.start; s.inRange(a); a = a.Next() {
		if s.free(a, mac, now) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// commit writes put (if not nil) and deletes the records in drop in one store
// transaction, then applies the same change to the tables. On error neither
// changes. The caller holds s.mu.
func (s *Server) commit(put *record, drop ...*record) error {
	var value []byte
	if put != nil {
		var err error
		if value, err = json.Marshal(put.lease()); err != nil {
			return fmt.Errorf("encoding lease %s: %w", put.addr, err)
		}
	}
	err := s.cfg.Leases.Update(func(tx store.Tx) error {
		for _, r := range drop {
			if r == nil {
				continue
			}
			if err := tx.Delete(leaseBucket, r.addr.String()); err != nil {
				return err
			}
		}
		if put == nil {
			return nil
		}
		return tx.Put(leaseBucket, put.addr.String(), value)
	})
	if err != nil {
		return fmt.Errorf("persisting dhcp lease: %w", err)
	}
	for _, r := range drop {
		if r == nil {
			continue
		}
		if s.byAddr[r.addr] == r {
			delete(s.byAddr, r.addr)
		}
		if s.byMAC[r.mac] == r {
			delete(s.byMAC, r.mac)
		}
	}
	if put != nil {
		s.byAddr[put.addr] = put
		if put.state != StateDeclined {
			s.byMAC[put.mac] = put
		}
	}
	return nil
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
	}
	return out
}
