package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// apiClient talks to the JSON API of a running kiln serve.
type apiClient struct {
	base string
	http *http.Client
}

// newAPIClient returns a client of the server at base. A zero timeout
// means none, for uploads of any size; the transport still bounds the wait
// for an answer once a request is sent.
func newAPIClient(base string, timeout time.Duration) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ExpectContinueTimeout = 5 * time.Second
	tr.ResponseHeaderTimeout = 5 * time.Minute
	return &apiClient{base: strings.TrimRight(base, "/"), http: &http.Client{Timeout: timeout, Transport: tr}}
}

// do sends a request with a JSON body (nil for none) and decodes a 2xx JSON
// answer into out.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	h := http.Header{}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	_, b, err := c.send(ctx, method, path, h, bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return err
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return nil
}

// send sends a request whose body has size bytes and returns a 2xx
// answer's status and body. A 4xx answer is the caller's mistake (exit 2),
// anything else a failure (exit 1); both carry the server's message.
func (c *apiClient) send(ctx context.Context, method, path string, h http.Header, body io.Reader, size int64) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, nil, usagef("--server %q: %v", c.base, err)
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("X-Kiln-Actor", actorName())
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, nil, statusError(method, path, resp, b)
	}
	return resp.StatusCode, b, nil
}

// httpStatusError is a non-2xx answer of the server.
type httpStatusError struct {
	code int
	msg  string
}

func (e *httpStatusError) Error() string { return e.msg }

// statusError turns a non-2xx answer into an *httpStatusError carrying the
// server's message, wrapped in a usageError for 4xx.
func statusError(method, path string, resp *http.Response, b []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if msg == "" {
		msg = "(no message)"
	}
	err := &httpStatusError{code: resp.StatusCode, msg: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, msg)}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return usageError{err}
	}
	return err
}

// actorName is who the CLI acts for, for kiln's audit trail: user@host,
// with the user from $SUDO_USER (the person behind sudo), else $USER, else
// the uid.
func actorName() string {
	user := os.Getenv("SUDO_USER")
	if user == "" {
		user = os.Getenv("USER")
	}
	if user == "" {
		user = "uid" + strconv.Itoa(os.Getuid())
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return user + "@" + host
}
