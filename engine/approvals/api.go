package approvals

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
)

// DecideRequest is the body of POST /v1/approvals/{id}/approve and /deny.
type DecideRequest struct {
	Reason string `json:"reason,omitempty"`
	// Digest, when set, must equal the request's statement digest: the
	// approver decides on exactly the statement they were shown.
	Digest string `json:"digest,omitempty"`
}

// APIError is the body of every error answer.
type APIError struct {
	Error string `json:"error"`
}

// Handler serves the approver API:
//
//	GET  /v1/approvals               pending requests
//	GET  /v1/approvals/{id}          one request, with its decision once made
//	POST /v1/approvals/{id}/approve  {"reason": "…", "digest": "…"}
//	POST /v1/approvals/{id}/deny     {"reason": "…"} (reason required)
//
// Every request is authenticated by auth first.
func Handler(m *Manager, auth Authenticator, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &apiHandler{m: m, auth: auth, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/approvals", h.list)
	mux.HandleFunc("GET /v1/approvals/{id}", h.show)
	mux.HandleFunc("POST /v1/approvals/{id}/approve", func(w http.ResponseWriter, r *http.Request) { h.decide(w, r, true) })
	mux.HandleFunc("POST /v1/approvals/{id}/deny", func(w http.ResponseWriter, r *http.Request) { h.decide(w, r, false) })
	return mux
}

type apiHandler struct {
	m    *Manager
	auth Authenticator
	log  *slog.Logger
}

func (h *apiHandler) authenticate(w http.ResponseWriter, r *http.Request) (Approver, bool) {
	a, err := h.auth.Authenticate(r)
	if err != nil {
		h.fail(w, r, err)
		return a, false
	}
	return a, true
}

func (h *apiHandler) list(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.authenticate(w, r); !ok {
		return
	}
	reqs, err := h.m.List(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if reqs == nil {
		reqs = []*Request{}
	}
	writeJSON(w, http.StatusOK, reqs)
}

func (h *apiHandler) show(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.authenticate(w, r); !ok {
		return
	}
	req, err := h.m.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (h *apiHandler) decide(w http.ResponseWriter, r *http.Request, approve bool) {
	a, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	var body DecideRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		writeJSON(w, http.StatusBadRequest, APIError{Error: "body: " + err.Error()})
		return
	}
	req, err := h.m.Decide(r.Context(), r.PathValue("id"), a, approve, body.Reason, body.Digest)
	if err != nil {
		h.log.Warn("approval decision refused", "id", r.PathValue("id"), "approver", a.String(), "approve", approve, "error", err)
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (h *apiHandler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := StatusOf(err)
	if status == http.StatusInternalServerError {
		h.log.Error("approvals API", "path", r.URL.Path, "error", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="interlock-approvals"`)
	}
	writeJSON(w, status, APIError{Error: err.Error()})
}

// StatusOf maps an error of this package to its HTTP status.
func StatusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrSelfApproval):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrDecided), errors.Is(err, ErrExpired), errors.Is(err, ErrBinding):
		return http.StatusConflict
	case errors.Is(err, ErrReasonRequired), errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
