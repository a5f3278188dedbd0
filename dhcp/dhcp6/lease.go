package dhcp6

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/kiln-dev/kiln/store"
)

// leaseBucket holds one Lease per address, keyed by the address.
const leaseBucket = "dhcp6-leases"

// iaKey names one identity association: a client DUID (raw bytes as a
// string) and an IAID.
type iaKey struct {
	duid string
	iaid [4]byte
}

// record is the in-memory form of a Lease. Records are never mutated once
// they are in the tables: a change replaces the record.
type record struct {
	key     iaKey
	mac     string
	addr    netip.Addr
	expires time.Time
	state   string
}

func (r *record) lease() Lease {
	return Lease{
		DUID: hex.EncodeToString([]byte(r.key.duid)), IAID: hex.EncodeToString(r.key.iaid[:]),
		MAC: r.mac, IP: r.addr.String(), Expires: r.expires, State: r.state,
	}
}

func (r *record) expired(now time.Time) bool { return !now.Before(r.expires) }

// load reads every lease from the store. Malformed records are skipped with
// a warning; of two records for one IA the one that expires later wins.
func (s *Server) load() error {
	s.byAddr = make(map[netip.Addr]*record)
	s.byIA = make(map[iaKey]*record)
	var recs []*record
	err := s.cfg.Leases.View(func(tx store.Tx) error {
		return tx.ForEach(leaseBucket, func(key string, value []byte) error {
			r, err := decodeLease(key, value)
			if err != nil {
				s.log.Warn("skipping stored dhcp6 lease", "key", key, "err", err)
				return nil
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("loading dhcp6 leases: %w", err)
	}
	slices.SortFunc(recs, func(a, b *record) int { return a.expires.Compare(b.expires) })
	for _, r := range recs {
		if r.state != StateDeclined {
			if old := s.byIA[r.key]; old != nil {
				delete(s.byAddr, old.addr)
			}
			s.byIA[r.key] = r
		}
		s.byAddr[r.addr] = r
	}
	s.log.Info("loaded dhcp6 leases", "count", len(s.byAddr))
	return nil
}

func decodeLease(key string, value []byte) (*record, error) {
	var l Lease
	if err := json.Unmarshal(value, &l); err != nil {
		return nil, fmt.Errorf("decoding lease: %w", err)
	}
	a, err := netip.ParseAddr(l.IP)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" || key != a.String() {
		return nil, fmt.Errorf("lease address %q does not match key", l.IP)
	}
	duid, err := hex.DecodeString(l.DUID)
	if err != nil || len(duid) == 0 {
		return nil, fmt.Errorf("lease duid %q is not hex", l.DUID)
	}
	iaid, err := hex.DecodeString(l.IAID)
	if err != nil || len(iaid) != 4 {
		return nil, fmt.Errorf("lease iaid %q is not 4 hex bytes", l.IAID)
	}
	if l.MAC != "" {
		mac, err := net.ParseMAC(l.MAC)
		if err != nil {
			return nil, fmt.Errorf("lease mac %q: %w", l.MAC, err)
		}
		l.MAC = mac.String()
	}
	switch l.State {
	case StateOffered, StateBound, StateDeclined:
	default:
		return nil, fmt.Errorf("lease state %q is unknown", l.State)
	}
	return &record{key: iaKey{duid: string(duid), iaid: [4]byte(iaid)}, mac: l.MAC, addr: a,
		expires: l.Expires, state: l.State}, nil
}

// free reports whether addr may be given to key. The caller holds s.mu.
func (s *Server) free(addr netip.Addr, key iaKey, now time.Time) bool {
	r := s.byAddr[addr]
	return r == nil || r.expired(now) || (r.key == key && r.state != StateDeclined)
}

// pick chooses the address for an IA: its current address, else a hinted
// address (from the client's IA) that is free, else a free address found
// by probing the pool from a point hashed from the IA, so that a client
// tends to get the same address from any kiln. The caller holds s.mu.
func (s *Server) pick(key iaKey, hints []netip.Addr, now time.Time) (netip.Addr, bool) {
	p := s.cfg.Pool
	if r := s.byIA[key]; r != nil && inPool(p, r.addr) {
		return r.addr, true
	}
	for _, h := range hints {
		if inPool(p, h) && s.free(h, key, now) {
			return h, true
		}
	}
	first, last := lo(p.Start), lo(p.End)
	size := last - first + 1 // 0 means 2^64
	h := fnv.New64a()
	h.Write([]byte(key.duid))
	h.Write(key.iaid[:])
	off := h.Sum64()
	if size != 0 {
		off %= size
	}
	probes := uint64(maxProbe)
	if size != 0 && size < probes {
		probes = size
	}
	for i := range probes {
		v := first + (off+i)%size
		if size == 0 {
			v = first + off + i
		}
		if a := withLo(p.Start, v); s.free(a, key, now) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// commit writes put (if not nil) and deletes the records in drop in one
// store transaction, then applies the same change to the tables. On error
// neither changes. The caller holds s.mu.
func (s *Server) commit(put *record, drop ...*record) error {
	var value []byte
	if put != nil {
		var err error
		if value, err = json.Marshal(put.lease()); err != nil {
			return fmt.Errorf("encoding dhcp6 lease %s: %w", put.addr, err)
		}
	}
	err := s.cfg.Leases.Update(func(tx store.Tx) error {
		for _, r := range drop {
			if r == nil || (put != nil && r.addr == put.addr) {
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
		return fmt.Errorf("persisting dhcp6 lease: %w", err)
	}
	for _, r := range drop {
		if r == nil {
			continue
		}
		if s.byAddr[r.addr] == r {
			delete(s.byAddr, r.addr)
		}
		if s.byIA[r.key] == r {
			delete(s.byIA, r.key)
		}
	}
	if put != nil {
		s.byAddr[put.addr] = put
		if put.state != StateDeclined {
			s.byIA[put.key] = put
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
