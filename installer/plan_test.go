package installer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func validPlan() Plan {
	return Plan{
		MAC:        "52:54:00:12:34:56",
		Generation: 1,
		Image:      "sha256:" + strings.Repeat("0f", 32),
		DiskURL:    "http://10.77.0.1:8080/blobs/sha256:" + strings.Repeat("0f", 32) + "?mac=52:54:00:12:34:56",
		DiskSHA256: strings.Repeat("0f", 32),
		DiskSize:   64 * MiB,
		ReportURL:  "http://10.77.0.1:8080/install/52:54:00:12:34:56/report?token=abc",
		Seed:       "KILN_IDENTITY_URL=http://10.77.0.1:8080/identity\n",
	}
}

func TestPlanValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Plan)
		want string // "" = valid; else the start of the message after "invalid install plan: "
	}{
		{"valid", func(*Plan) {}, ""},
		{"uppercase sha256", func(p *Plan) { p.DiskSHA256 = strings.ToUpper(p.DiskSHA256) }, ""},
		{"https", func(p *Plan) { p.DiskURL = "https://kiln.example/blob" }, ""},
		{"empty seed", func(p *Plan) { p.Seed = "" }, ""},
		{"seed at the limit", func(p *Plan) { p.Seed = strings.Repeat("x", MaxSeed) }, ""},
		{"smallest size", func(p *Plan) { p.DiskSize = 2*MiB + 1 }, ""},
		{"no mac", func(p *Plan) { p.MAC = "" }, `mac: "" is not`},
		{"bad mac", func(p *Plan) { p.MAC = "52:54:00:12:34" }, "mac:"},
		{"eui-64 mac", func(p *Plan) { p.MAC = "52:54:00:12:34:56:78:9a" }, "mac:"},
		{"generation 0", func(p *Plan) { p.Generation = 0 }, "generation: 0"},
		{"negative generation", func(p *Plan) { p.Generation = -2 }, "generation: -2"},
		{"no image", func(p *Plan) { p.Image = "" }, "image: missing"},
		{"image with space", func(p *Plan) { p.Image = "a b" }, "image:"},
		{"image too long", func(p *Plan) { p.Image = strings.Repeat("a", 257) }, "image:"},
		{"no disk_url", func(p *Plan) { p.DiskURL = "" }, "disk_url: missing"},
		{"ftp disk_url", func(p *Plan) { p.DiskURL = "ftp://x/y" }, "disk_url:"},
		{"relative disk_url", func(p *Plan) { p.DiskURL = "/blobs/x" }, "disk_url:"},
		{"hostless disk_url", func(p *Plan) { p.DiskURL = "http:///x" }, "disk_url:"},
		{"bad disk_url", func(p *Plan) { p.DiskURL = "http://[::1/x" }, "disk_url:"},
		{"short sha256", func(p *Plan) { p.DiskSHA256 = "abcd" }, "disk_sha256:"},
		{"non-hex sha256", func(p *Plan) { p.DiskSHA256 = strings.Repeat("zz", 32) }, "disk_sha256:"},
		{"prefixed sha256", func(p *Plan) { p.DiskSHA256 = "sha256:" + strings.Repeat("0f", 32) }, "disk_sha256:"},
		{"size 2 MiB", func(p *Plan) { p.DiskSize = 2 * MiB }, "disk_size: 2097152 bytes"},
		{"size 0", func(p *Plan) { p.DiskSize = 0 }, "disk_size:"},
		{"negative size", func(p *Plan) { p.DiskSize = -1 }, "disk_size:"},
		{"no report_url", func(p *Plan) { p.ReportURL = "" }, "report_url: missing"},
		{"file report_url", func(p *Plan) { p.ReportURL = "file:///etc/passwd" }, "report_url:"},
		{"seed too long", func(p *Plan) { p.Seed = strings.Repeat("x", MaxSeed+1) }, "seed: 61441 bytes, more than 61440"},
		{"seed with NUL", func(p *Plan) { p.Seed = "A=1\x00B=2" }, "seed: contains a NUL byte"},
		{"seed not UTF-8", func(p *Plan) { p.Seed = "A=\xff" }, "seed: is not UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validPlan()
			tt.edit(&p)
			err := p.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPlan) || !strings.HasPrefix(err.Error(), "invalid install plan: "+tt.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidPlan starting %q", err, tt.want)
			}
		})
	}
}

func TestDecodePlan(t *testing.T) {
	good, _ := json.Marshal(validPlan())
	tests := []struct {
		name, doc string
		want      string // error substring; "" = valid
	}{
		{"valid", string(good), ""},
		{"valid with trailing newline", string(good) + "\n", ""},
		{"unknown field", strings.Replace(string(good), `{`, `{"extra":1,`, 1), `unknown field "extra"`},
		{"two objects", string(good) + string(good), "data after the JSON object"},
		{"trailing garbage", string(good) + "x", "data after the JSON object"},
		{"not JSON", "<html>", "invalid character"},
		{"empty", "", "EOF"},
		{"size as string", strings.Replace(string(good), `"disk_size":67108864`, `"disk_size":"67108864"`, 1), "disk_size"},
		{"missing sha256", strings.Replace(string(good), `"disk_sha256":"`+strings.Repeat("0f", 32)+`",`, "", 1), "disk_sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodePlan([]byte(tt.doc))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("DecodePlan = %v", err)
				}
				if diff := cmp.Diff(validPlan(), p); diff != "" {
					t.Errorf("DecodePlan (-want +got):\n%s", diff)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPlan) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodePlan = %v, want ErrInvalidPlan containing %q", err, tt.want)
			}
		})
	}
}

func TestFetchPlan(t *testing.T) {
	good, _ := json.Marshal(validPlan())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write(good)
		case "/forbidden":
			http.Error(w, "token expired", http.StatusForbidden)
		case "/error":
			http.Error(w, "database is locked\nmore", http.StatusInternalServerError)
		case "/huge":
			w.Write([]byte(`{"seed":"`))
			w.Write([]byte(strings.Repeat("x", maxPlanBody)))
			w.Write([]byte(`"}`))
		case "/invalid":
			w.Write([]byte(`{"mac":"52:54:00:12:34:56"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	tests := []struct {
		path   string
		wantIs error
		want   string
	}{
		{"/ok", nil, ""},
		{"/forbidden", ErrForbidden, "forbidden: token expired"},
		{"/error", nil, "500 Internal Server Error: database is locked"},
		{"/huge", ErrInvalidPlan, "larger than 1048576 bytes"},
		{"/invalid", ErrInvalidPlan, "generation: 0"},
		{"/missing", nil, "404 Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p, err := FetchPlan(context.Background(), srv.Client(), srv.URL+tt.path+"?token=secret")
			if tt.want == "" {
				if err != nil {
					t.Fatalf("FetchPlan = %v", err)
				}
				if diff := cmp.Diff(validPlan(), p); diff != "" {
					t.Errorf("FetchPlan (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("FetchPlan = %v, want %v containing %q", err, tt.wantIs, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the token", err)
			}
		})
	}
	if _, err := FetchPlan(context.Background(), nil, "http://127.0.0.1:1/x?token=secret"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("FetchPlan of a closed port = %v, want an error without the token", err)
	}
}

// FuzzPlan decodes arbitrary documents: DecodePlan never panics, and an
// accepted plan validates, re-encodes and decodes to itself.
func FuzzPlan(f *testing.F) {
	good, _ := json.Marshal(validPlan())
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"mac":"52:54:00:12:34:56","generation":1e3,"disk_size":3e6}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodePlan(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidPlan) {
				t.Fatalf("DecodePlan error %v does not wrap ErrInvalidPlan", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted plan does not validate: %v", err)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := DecodePlan(again)
		if err != nil {
			t.Fatalf("re-encoded plan %s rejected: %v", again, err)
		}
		if diff := cmp.Diff(p, q); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
