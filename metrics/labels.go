package metrics

import (
	"strings"
	"sync"
)

// OtherLabel is the label value of everything outside a label's fixed set.
const OtherLabel = "other"

// NoneLabel is the message type label of packets that could not be parsed
// far enough to have one.
const NoneLabel = "none"

// maxLabelLen bounds the input that is lower-cased for a lookup; longer
// strings are "other" without being copied.
const maxLabelLen = 32

// enum maps the accepted spellings of a label's values to the label
// value, lower-case. It is read-only after init.
type enum map[string]string

// newEnum returns an enum of values, accepted in any case; "" maps to
// empty if empty is not "".
func newEnum(empty string, values ...string) enum {
	e := enum{}
	for _, v := range values {
		l := strings.ToLower(v)
		e[l], e[strings.ToUpper(v)] = l, l
	}
	if empty != "" {
		e[""] = empty
	}
	return e
}

// label returns the label value of s: its lower-case form if it is in the
// set, else OtherLabel.
func (e enum) label(s string) string {
	if v, ok := e[s]; ok {
		return v
	}
	if len(s) <= maxLabelLen {
		if v, ok := e[strings.ToLower(s)]; ok {
			return v
		}
	}
	return OtherLabel
}

// The label sets. Message types are the names insomniacslk/dhcp prints;
// outcomes are those of dhcp.Decision and dhcp6.Decision.
var (
	dhcp4Types = newEnum(NoneLabel,
		"DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM")
	dhcp4Outcomes = newEnum("",
		"offered", "acked", "nak", "released", "declined", "informed", "ignored", "malformed", "error")
	dhcp6Types = newEnum(NoneLabel,
		"SOLICIT", "ADVERTISE", "REQUEST", "CONFIRM", "RENEW", "REBIND", "REPLY", "RELEASE", "DECLINE",
		"RECONFIGURE", "INFORMATION-REQUEST", "RELAY-FORW", "RELAY-REPL")
	dhcp6Outcomes = newEnum("",
		"offered", "acked", "nak", "released", "declined", "confirmed", "informed", "ignored", "malformed", "error")
	tftpOutcomes = newEnum("",
		TFTPOK, TFTPNotFound, TFTPAccessDenied, TFTPBusy, TFTPSizeProbe, TFTPError)
	httpMethods = newEnum("",
		"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
)

// maxRoutes bounds the distinct values of the route label.
const maxRoutes = 64

// labelSet admits the first max distinct values of a label and maps every
// later one to OtherLabel, for labels whose values come from a caller's
// function rather than a fixed set.
type labelSet struct {
	max int

	mu   sync.RWMutex
	seen map[string]bool
}

func (s *labelSet) label(v string) string {
	s.mu.RLock()
	ok := s.seen[v]
	s.mu.RUnlock()
	if ok {
		return v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[v] {
		return v
	}
	if len(s.seen) >= s.max || len(v) > 256 {
		return OtherLabel
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	s.seen[v] = true
	return v
}
