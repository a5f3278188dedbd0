// Package web serves kiln over HTTP: iPXE boot scripts, image artifacts by
// digest, each machine's identity and phone-home, the JSON API under /api/v1
// and the operator's inventory page.
//
// Handlers return an error; one adapter (see errors.go) turns it into a
// status and a safe message and logs the detail. Responses are rendered into
// a buffer before anything is written, except blobs, which are streamed from
// the image store with http.ServeContent (Range, HEAD, sendfile).
package web

import (
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/mux"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
	"github.com/kiln-dev/kiln/metrics"
)

// maxBody bounds every request body kiln reads (API and phone-home).
const maxBody = 64 << 10

// Config configures a Server. Zero optional fields take the defaults
// documented on each field.
type Config struct {
	Fleet  *fleet.Fleet  // required
	Images *images.Store // required
	// BaseURL is how machines reach this server, e.g.
	// "http://10.77.0.1:8080". It is written into boot scripts and kernel
	// command lines. Empty means "http://" + the request's Host header.
	BaseURL string
	// MaxBlobSize bounds one blob uploaded with PUT /api/v1/blobs/{digest}.
	// Zero means DefaultMaxBlobSize (64 GiB).
	MaxBlobSize int64
	// HTTPBootFile is the host path of the EFI iPXE binary that UEFI HTTP
	// Boot clients get when their image has no uki output (e.g.
	// /usr/lib/ipxe/snponly.efi); empty refuses them.
	HTTPBootFile string
	// InstallerInitramfs is the installer's initramfs (package installer),
	// served at /install/initramfs.cpio to install boots. Nil refuses
	// install boots' second initrd with a 404 that says so.
	InstallerInitramfs []byte
	// Metrics, if set, is served at GET /metrics, and every request is
	// counted and timed in it by route template (metrics.Instrument). Nil
	// serves no /metrics (404) and records nothing.
	Metrics *metrics.Metrics
	Log     *slog.Logger // nil discards
}

// Server is kiln's HTTP server. Its handler is safe for concurrent use.
type Server struct {
	fleet   *fleet.Fleet
	images  *images.Store
	base    string // without a trailing slash; empty means from the request
	maxBlob int64
	// httpBootFile is Config.HTTPBootFile.
	httpBootFile string
	metrics      *metrics.Metrics // nil records nothing
	installer    []byte           // Config.InstallerInitramfs
	log          *slog.Logger
	page         *template.Template
	router       *mux.Router
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Fleet == nil {
		return nil, errors.New("web: no fleet")
	}
	if cfg.Images == nil {
		return nil, errors.New("web: no image store")
	}
	base, err := parseBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	page, err := parsePage()
	if err != nil {
		return nil, err
	}
	if cfg.MaxBlobSize < 0 {
		return nil, fmt.Errorf("web: MaxBlobSize %d is negative", cfg.MaxBlobSize)
	}
	s := &Server{fleet: cfg.Fleet, images: cfg.Images, base: base, maxBlob: cfg.MaxBlobSize, httpBootFile: cfg.HTTPBootFile, metrics: cfg.Metrics, log: cfg.Log, page: page, installer: cfg.InstallerInitramfs}
	if s.maxBlob == 0 {
		s.maxBlob = DefaultMaxBlobSize
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.router = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler: the gorilla/mux router, wrapped
// so that every request is logged at Debug and, with Config.Metrics,
// counted and timed.
func (s *Server) Handler() http.Handler {
	h := http.Handler(s.router)
	if s.metrics != nil {
		h = s.metrics.Instrument(s.routeName)(h)
	}
	return s.logRequests(h)
}

// routeName returns the label of the route that serves r: its path
// template (e.g. "/boot/{mac}.ipxe"), "unmatched" for a 404 or
// "method_not_allowed". It never returns the raw path, so the metrics'
// route label has a handful of values.
func (s *Server) routeName(r *http.Request) string {
	var m mux.RouteMatch
	if s.router.Match(r, &m) && m.MatchErr == nil && m.Route != nil {
		if tpl, err := m.Route.GetPathTemplate(); err == nil {
			return tpl
		}
	}
	if errors.Is(m.MatchErr, mux.ErrMethodMismatch) {
		return "method_not_allowed"
	}
	return "unmatched"
}

func (s *Server) routes() *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = s.adapt(func(w http.ResponseWriter, r *http.Request) error {
		return HTTPError{Code: http.StatusNotFound, Msg: "no such page: " + r.URL.Path}
	})
	r.MethodNotAllowedHandler = s.adapt(func(w http.ResponseWriter, r *http.Request) error {
		return HTTPError{Code: http.StatusMethodNotAllowed, Msg: fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path)}
	})
	get, head := http.MethodGet, http.MethodHead

	// The boot path. HEAD is answered wherever firmware may probe (OVMF's
	// HTTP boot sends HEAD before GET); only GET records an event.
	r.Handle("/boot/{mac}.ipxe", s.adapt(s.bootScript)).Methods(get, head)
	r.Handle("/blobs/{digest}", s.adapt(s.blob)).Methods(get, head)
	r.Handle("/httpboot/{mac}.efi", s.adapt(s.httpBoot)).Methods(get, head)
	r.Handle("/identity/{mac}", s.adapt(s.serveIdentity)).Methods(get)
	r.Handle("/phone-home/{mac}", s.adapt(s.phoneHome)).Methods(http.MethodPost)
	r.Handle("/nocloud/{mac}/{token}/{file}", s.adapt(s.serveNoCloud)).Methods(get)
	r.Handle("/install/initramfs.cpio", s.adapt(s.installerInitramfs)).Methods(get, head)
	r.Handle("/install/{mac}", s.adapt(s.servePlan)).Methods(get)
	r.Handle("/install/{mac}/report", s.adapt(s.serveInstallReport)).Methods(http.MethodPost)

	// The JSON API. There is no PATCH of a machine: a change is a new
	// generation (PUT replaces, reimage, rollback), booted fresh. Every
	// change is audited with its actor (X-Kiln-Actor). PUT of blobs and
	// images uploads content-addressed data: created, never replaced.
	r.Handle("/api/v1/machines", s.adapt(s.listMachines)).Methods(get)
	r.Handle("/api/v1/machines", s.adapt(s.createMachine)).Methods(http.MethodPost)
	r.Handle("/api/v1/machines/{mac}", s.adapt(s.getMachine)).Methods(get)
	r.Handle("/api/v1/machines/{mac}", s.adapt(s.replaceMachine)).Methods(http.MethodPut)
	r.Handle("/api/v1/machines/{mac}", s.adapt(noPatch)).Methods(http.MethodPatch)
	r.Handle("/api/v1/machines/{mac}/timeline", s.adapt(s.getTimeline)).Methods(get)
	r.Handle("/api/v1/machines/{mac}/{op:reimage|rollback|retire}", s.adapt(s.machineOp)).Methods(http.MethodPost)
	r.Handle("/api/v1/machines/{mac}", s.adapt(s.deleteMachine)).Methods(http.MethodDelete)
	r.Handle("/api/v1/images", s.adapt(s.listImages)).Methods(get)
	r.Handle("/api/v1/images/{id}", s.adapt(s.getImage)).Methods(get)
	r.Handle("/api/v1/images/{id}", s.adapt(s.putImage)).Methods(http.MethodPut)
	r.Handle("/api/v1/blobs/{digest}", s.adapt(s.headBlob)).Methods(head)
	r.Handle("/api/v1/blobs/{digest}", s.adapt(s.putBlob)).Methods(http.MethodPut)

	r.Handle("/", s.adapt(s.inventory)).Methods(get, head)
	r.Handle("/healthz", s.adapt(healthz)).Methods(get, head)
	if s.metrics != nil {
		r.Handle("/metrics", s.metrics.Handler()).Methods(get)
	}
	return r
}

func healthz(w http.ResponseWriter, r *http.Request) error {
	writeBody(w, http.StatusOK, "text/plain; charset=utf-8", []byte("ok\n"))
	return nil
}

// parseBaseURL checks a configured base URL and returns it without a
// trailing slash.
func parseBaseURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("web: base URL %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, " \t\r\n") {
		return "", fmt.Errorf("web: base URL %q: want http://host[:port][/path]", s)
	}
	return strings.TrimSuffix(s, "/"), nil
}

// baseURL returns the URL prefix machines use to reach this server.
func (s *Server) baseURL(r *http.Request) (string, error) {
	if s.base != "" {
		return s.base, nil
	}
	// The Host header ends up in the script and kernel command line; allow
	// only what a host name, an IPv4 or a bracketed IPv6 address and a port
	// can hold.
	if r.Host == "" || strings.IndexFunc(r.Host, func(c rune) bool {
		return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune(".-:[]", c))
	}) >= 0 {
		return "", HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("host %q is not a host name or address", r.Host)}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host, nil
}
