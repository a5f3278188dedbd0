package installer

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestReport(t *testing.T) {
	var calls atomic.Int32
	var last atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		var m map[string]string
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&m) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		last.Store(m)
		switch r.URL.Path {
		case "/flaky":
			if n == 1 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
		case "/forbidden":
			http.Error(w, "no installing session", http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	ctx := context.Background()

	if err := Report(ctx, nil, srv.URL+"/ok", true, "ignored"); err != nil {
		t.Fatal(err)
	}
	if m := last.Load().(map[string]string); len(m) != 1 || m["state"] != "installed" {
		t.Errorf("installed report = %v", m)
	}
	long := strings.Repeat("r", 5000)
	if err := Report(ctx, nil, srv.URL+"/ok", false, long); err != nil {
		t.Fatal(err)
	}
	if m := last.Load().(map[string]string); m["state"] != "failed" || m["reason"] != long[:maxReason] {
		t.Errorf("failed report = %.80v", m)
	}

	calls.Store(0)
	if err := Report(ctx, nil, srv.URL+"/flaky", true, ""); err != nil || calls.Load() != 2 {
		t.Errorf("Report to a flaky server = %v after %d calls, want success after 2", err, calls.Load())
	}
	calls.Store(0)
	err := Report(ctx, nil, srv.URL+"/forbidden?token=secret", true, "")
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden: no installing session") || strings.Contains(err.Error(), "secret") || calls.Load() != 1 {
		t.Errorf("Report to a 403 = %v after %d calls, want one call and the reason without the token", err, calls.Load())
	}
}
