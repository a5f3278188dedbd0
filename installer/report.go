package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxReason bounds the failure reason sent to kiln.
const maxReason = 1024

// reportAttempts and reportBackoff bound Report's retries.
const (
	reportAttempts = 4
	reportBackoff  = time.Second
)

// Report POSTs the install outcome to reportURL as JSON:
// {"state":"installed"} when ok, else {"state":"failed","reason":reason}
// (reason cut to 1 KiB). It retries network errors and 5xx answers a few
// times; any 2xx is success, other statuses are final errors.
func Report(ctx context.Context, client *http.Client, reportURL string, ok bool, reason string) error {
	if client == nil {
		client = http.DefaultClient
	}
	msg := struct {
		State  string `json:"state"`
		Reason string `json:"reason,omitempty"`
	}{State: "installed"}
	if !ok {
		msg.State = "failed"
		msg.Reason = reason
		if len(msg.Reason) > maxReason {
			msg.Reason = msg.Reason[:maxReason]
		}
		if msg.Reason == "" {
			msg.Reason = "unknown"
		}
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("reporting %s: %w", msg.State, err)
	}
	var last error
	for attempt := 0; attempt < reportAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(reportBackoff << (attempt - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("reporting %s to %s: %w (last: %v)", msg.State, redact(reportURL), ctx.Err(), last)
			case <-t.C:
			}
		}
		retry, err := postReport(ctx, client, reportURL, body)
		if err == nil {
			return nil
		}
		last = err
		if !retry {
			break
		}
	}
	return fmt.Errorf("reporting %s to %s: %w", msg.State, redact(reportURL), last)
}

// postReport makes one POST; retry says whether another may succeed.
func postReport(ctx context.Context, client *http.Client, reportURL string, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, reportURL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return ctx.Err() == nil, scrub(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 500:
		return true, fmt.Errorf("%s: %s", resp.Status, snippet(text))
	default:
		return false, fmt.Errorf("%s: %s", resp.Status, snippet(text))
	}
}
