//go:build linux

package dhcp

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/kiln-dev/kiln/store"
)

// The crash loop's clients and what they check.

// crashAck is one ACK a client received: the client holds ip from recv
// until sent (of the request) plus the lease time, or until it releases it.
type crashAck struct {
	kind       string // "select" or "renew"
	xid        string
	mac        string
	ip         netip.Addr
	sent, recv time.Time
	lease      time.Duration
	until      time.Time // sent+lease, or the release
}

func (a *crashAck) String() string {
	const ms = "15:04:05.000"
	return fmt.Sprintf("%s (%s xid %s sent %s) from %s to %s", a.mac, a.kind, a.xid,
		a.sent.Format(ms), a.recv.Format(ms), a.until.Format(ms))
}

// crashLog collects what the clients saw.
type crashLog struct {
	mu       sync.Mutex
	acks     []*crashAck
	problems []string
	// counters
	naks, noOffer, renewals, renewedAcrossKill, unanswered, verified, unverified, fileChecked int
	// failures
	fileMissing, nakValid int
	// owners counts the MACs each address was ACKed to; reused the
	// addresses ACKed to more than one.
	owners map[netip.Addr]map[string]bool
	reused int
}

func (l *crashLog) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

func (l *crashLog) count(c *int) {
	l.mu.Lock()
	*c++
	l.mu.Unlock()
}

// crashClient is one MAC going through INIT, BOUND and back.
type crashClient struct {
	mac net.HardwareAddr
	net *crashNet
	log *crashLog
	sup *crashSupervisor
	rng *rand.Rand
	ack *crashAck // current lease, or nil
}

func (c *crashClient) valid() time.Time { return c.ack.sent.Add(c.ack.lease).Add(-crashMargin) }

func (c *crashClient) bind(kind string, m *dhcpv4.DHCPv4, sent, recv time.Time) {
	lease := m.IPAddressLeaseTime(0)
	if lease <= 0 {
		c.log.problem("%s: ACK without lease time", c.mac)
		return
	}
	ip, _ := netip.AddrFromSlice(m.YourIPAddr.To4())
	c.ack = &crashAck{kind: kind, xid: m.TransactionID.String(), mac: c.mac.String(), ip: ip, sent: sent, recv: recv, lease: lease, until: sent.Add(lease)}
	c.log.mu.Lock()
	defer c.log.mu.Unlock()
	c.log.acks = append(c.log.acks, c.ack)
	if c.log.owners[ip] == nil {
		c.log.owners[ip] = make(map[string]bool)
	}
	if o := c.log.owners[ip]; !o[c.ack.mac] {
		o[c.ack.mac] = true
		if len(o) == 2 {
			c.log.reused++
		}
	}
}

// run drives the client until load ends, then checks its lease once the
// last server child serves (final closes).
func (c *crashClient) run(load context.Context, final <-chan struct{}) {
	sleep := func(d time.Duration) bool {
		select {
		case <-load.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for load.Err() == nil {
		if c.ack == nil {
			c.acquire()
			if c.ack == nil {
				sleep(time.Duration(100+c.rng.IntN(200)) * time.Millisecond)
			}
			continue
		}
		frac := func(lo, hi float64) time.Duration {
			return time.Duration((lo + (hi-lo)*c.rng.Float64()) * float64(c.ack.lease))
		}
		switch r := c.rng.IntN(100); {
		case r < 15: // release
			if sleep(time.Until(c.ack.recv.Add(frac(0.1, 0.6)))) {
				c.release()
				// The server handles packets concurrently, and UDP keeps no
				// order anyway: a DISCOVER right after the RELEASE could
				// be handled first, and the RELEASE then frees the new
				// lease. Real clients do not rebind within milliseconds.
				sleep(time.Duration(200+c.rng.IntN(300)) * time.Millisecond)
			}
		case r < 30: // let it lapse, then start over
			if sleep(time.Until(c.ack.until)) {
				c.ack = nil
			}
		default: // renew from INIT-REBOOT: ask for the address again
			if sleep(time.Until(c.ack.recv.Add(frac(0.3, 0.7)))) {
				c.renew(false)
			}
		}
	}
	<-final
	if c.ack != nil && time.Until(c.valid()) > 2*crashRetry {
		c.renew(true)
	}
}

// acquire runs DISCOVER, OFFER, REQUEST, ACK.
func (c *crashClient) acquire() {
	offer, _, _ := c.net.exchange(c.net.newMsg(c.mac, dhcpv4.MessageTypeDiscover), crashBcast,
		time.Now().Add(time.Second), dhcpv4.MessageTypeOffer)
	if offer == nil {
		c.log.count(&c.log.noOffer)
		return
	}
	req := c.net.newMsg(c.mac, dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier())))
	m, sent, recv := c.net.exchange(req, crashBcast, time.Now().Add(time.Second),
		dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
	switch {
	case m == nil:
	case m.MessageType() == dhcpv4.MessageTypeNak:
		c.log.count(&c.log.naks) // the offer may be gone with a killed server
	case !m.YourIPAddr.Equal(offer.YourIPAddr):
		c.log.problem("%s: REQUEST for %s ACKed with %s", c.mac, offer.YourIPAddr, m.YourIPAddr)
	default:
		c.bind("select", m, sent, recv)
	}
}

// renew asks for the current address in INIT-REBOOT (option 50, no
// ciaddr, no server identifier) as a client that restarted would, while
// the lease is valid. final is the check after the crash loop, once the
// last server child serves.
func (c *crashClient) renew(final bool) {
	cur := c.ack
	req := c.net.newMsg(c.mac, dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(cur.ip.AsSlice())))
	m, sent, recv := c.net.exchange(req, crashBcast, c.valid(), dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
	switch {
	case m == nil && final:
		// A server that is up but overloaded drops packets ("all handlers
		// busy"), so silence proves nothing here; the file check does.
		c.log.count(&c.log.unverified)
	case m == nil:
		c.log.count(&c.log.unanswered)
		time.Sleep(time.Until(cur.until)) // the lease lapses
		c.ack = nil
		return
	case m.MessageType() == dhcpv4.MessageTypeNak:
		c.log.count(&c.log.nakValid)
		c.log.problem("%s: NAK for its valid lease %s (acked %s, valid until %s, asked %s), reason %q",
			c.mac, cur.ip, cur.recv.Format("15:04:05.000"), cur.until.Format("15:04:05.000"),
			sent.Format("15:04:05.000"), m.Message())
		c.ack = nil
		return
	case !m.YourIPAddr.Equal(cur.ip.AsSlice()):
		c.log.problem("%s: INIT-REBOOT for %s ACKed with %s", c.mac, cur.ip, m.YourIPAddr)
		c.ack = nil
		return
	default:
		c.log.count(&c.log.renewals)
		if c.sup.killedBetween(cur.recv, sent) {
			c.log.count(&c.log.renewedAcrossKill)
		}
		if final {
			c.log.count(&c.log.verified)
		}
		c.bind("renew", m, sent, recv)
	}
}

// release gives the address back; the client stops using it first.
func (c *crashClient) release() {
	rel := c.net.newMsg(c.mac, dhcpv4.MessageTypeRelease,
		dhcpv4.WithBroadcast(false), dhcpv4.WithClientIP(c.ack.ip.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(crashServer.IP)))
	c.log.mu.Lock()
	now := time.Now()
	for _, a := range c.log.acks {
		if a.mac == c.ack.mac && a.ip == c.ack.ip && a.until.After(now) {
			a.until = now
		}
	}
	c.log.mu.Unlock()
	c.net.conn.WriteTo(rel.ToBytes(), crashServer) // no reply; a lost one only keeps the lease longer
	c.ack = nil
}

// checkFile checks the bbolt file at path, while no server runs, after the
// SIGKILL at time killed: every ACKed lease still valid then must be there,
// bound to its MAC until at least its end. The file holds one Lease (JSON)
// per address in bucket "dhcp-leases", as Config.Leases documents.
func (l *crashLog) checkFile(path string, killed time.Time) error {
	st, err := store.OpenBolt(path)
	if err != nil {
		return err
	}
	defer st.Close()
	onDisk := make(map[string]Lease)
	err = st.View(func(tx store.Tx) error {
		return tx.ForEach("dhcp-leases", func(key string, value []byte) error {
			var ls Lease
			if err := json.Unmarshal(value, &ls); err != nil {
				return fmt.Errorf("decoding lease %s: %w", key, err)
			}
			onDisk[key] = ls
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("reading leases after a kill: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.acks {
		if !a.until.After(killed) {
			continue
		}
		l.fileChecked++
		ls, ok := onDisk[a.ip.String()]
		if !ok || ls.MAC != a.mac || ls.State != StateBound || ls.Expires.Before(a.until) {
			l.fileMissing++
			l.problems = append(l.problems, fmt.Sprintf("acked lease missing from the file after the kill at %s: %s; file holds %+v",
				killed.Format("15:04:05.000"), a, ls))
		}
	}
	return nil
}

// doubleLeases returns the pairs of ACKs that gave one address to two MACs
// for overlapping times.
func doubleLeases(acks []*crashAck) []string {
	byIP := make(map[netip.Addr][]*crashAck)
	for _, a := range acks {
		byIP[a.ip] = append(byIP[a.ip], a)
	}
	var overlaps []string
	for ip, as := range byIP {
		for i, a := range as {
			for _, b := range as[i+1:] {
				if a.mac != b.mac && a.recv.Before(b.until) && b.recv.Before(a.until) {
					overlaps = append(overlaps, fmt.Sprintf("%s: %s, %s", ip, a, b))
				}
			}
		}
	}
	slices.Sort(overlaps)
	return overlaps
}
