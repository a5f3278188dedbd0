package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/kiln-dev/kiln/fleet"
)

// BUG(kiln): A UKI built by a kiln before uki.CmdlineRoom has no room in
// its .cmdline for the boot's token (kiln serves the others with it, see
// ukiWithCmdline), so fleet accepts one token-less identity request per
// boot of such a UKI, and its phone-home, which ends the boot. Whoever asks
// first in that window gets the identity. Rebuild such images.

// bootToken returns the per-boot token a request carries: the token query
// parameter, or else an "Authorization: Bearer" header.
func bootToken(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// authorize checks that r carries the token of mac's boot in progress. A
// refusal is a 403 saying why (no token, expired, another machine's or
// another boot's), logged with the path and the peer so that an operator
// can see who tried. The source address is never the proof: NAT and relays
// hide it.
func (s *Server) authorize(r *http.Request, mac string) (fleet.Machine, error) {
	return s.authorizeToken(r, mac, bootToken(r))
}

func (s *Server) authorizeToken(r *http.Request, mac, token string) (fleet.Machine, error) {
	m, err := s.fleet.CheckToken(mac, token)
	if errors.Is(err, fleet.ErrForbidden) {
		s.log.Warn("token refused", "mac", mac, "path", logPath(r), "remote", r.RemoteAddr, "reason", err.Error())
		return m, HTTPError{Code: http.StatusForbidden, Msg: err.Error(), Err: err}
	}
	return m, err
}
