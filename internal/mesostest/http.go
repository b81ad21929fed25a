package mesostest

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/gogo/protobuf/proto"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

// The HTTP shell of the scheduler API: authentication, media types,
// decoding and validation, in the order the master checks them; the calls
// then go to the state machine (dispatchLocked) under the master's lock.

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="mesos-master-scheduler"`)
	textError(w, http.StatusUnauthorized, "401 Unauthorized.")
}

// authenticate returns the principal, or false after answering 401.
func (m *Master) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	if len(m.cfg.Credentials) == 0 {
		return "", true
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		unauthorized(w)
		return "", false
	}
	if secret, known := m.cfg.Credentials[user]; !known || secret != pass {
		unauthorized(w)
		return "", false
	}
	return user, true
}

func mediaType(v string) string {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return strings.TrimSpace(strings.ToLower(v))
	}
	return mt
}

// acceptType picks the response encoding from Accept as the master does:
// JSON when acceptable, else protobuf; "" when neither.
func acceptType(r *http.Request) string {
	vals := r.Header.Values("Accept")
	if len(vals) == 0 {
		return "application/json"
	}
	ok := map[string]bool{}
	for _, v := range vals {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || params["q"] == "0" {
				continue
			}
			ok[mt] = true
		}
	}
	switch {
	case ok["application/json"] || ok["application/*"] || ok["*/*"]:
		return "application/json"
	case ok["application/x-protobuf"]:
		return "application/x-protobuf"
	}
	return ""
}

// readCall decodes a POSTed call (JSON or protobuf) into call, answering
// the request's mistakes as the master does; false when it answered.
func readCall(w http.ResponseWriter, r *http.Request, call proto.Message) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		textError(w, http.StatusMethodNotAllowed, fmt.Sprintf("405 Method Not Allowed. Expecting one of { 'POST' }, but received '%s'.", r.Method))
		return false
	}
	cts := r.Header.Values("Content-Type")
	if len(cts) == 0 {
		textError(w, http.StatusBadRequest, "Expecting 'Content-Type' to be present")
		return false
	}
	ct := mediaType(cts[len(cts)-1])
	if ct != "application/json" && ct != "application/x-protobuf" {
		textError(w, http.StatusUnsupportedMediaType, "Expecting 'Content-Type' of application/json or application/x-protobuf")
		return false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		textError(w, http.StatusBadRequest, "Failed to read body: "+err.Error())
		return false
	}
	if ct == "application/json" {
		v, err := parseJSONBody(body)
		if err != nil {
			textError(w, http.StatusBadRequest, "Failed to parse body into JSON: "+err.Error())
			return false
		}
		if err := unmarshalJSONValue(v, call); err != nil {
			textError(w, http.StatusBadRequest, "Failed to convert JSON into Call protobuf: "+err.Error())
			return false
		}
	} else if err := proto.Unmarshal(body, call); err != nil {
		textError(w, http.StatusBadRequest, "Failed to parse body into Call protobuf")
		return false
	}
	return true
}

func (m *Master) handleScheduler(w http.ResponseWriter, r *http.Request) {
	if m.redirectNonLeader(w, r) {
		return
	}
	principal, ok := m.authenticate(w, r)
	if !ok {
		return
	}
	call := &scheduler.Call{}
	if !readCall(w, r, call) {
		return
	}
	if msg := validateCall(call); msg != "" {
		textError(w, http.StatusBadRequest, "Failed to validate scheduler::Call: "+msg)
		return
	}
	if call.Type == scheduler.Call_SUBSCRIBE {
		if r.Header.Get("Mesos-Stream-Id") != "" {
			textError(w, http.StatusBadRequest, "Subscribe calls should not include the 'Mesos-Stream-Id' header")
			return
		}
		info := call.Subscribe.FrameworkInfo
		if principal != "" && info.Principal != nil && *info.Principal != principal {
			textError(w, http.StatusBadRequest, fmt.Sprintf("Failed to validate scheduler::Call: Authenticated principal '%s' does not match principal '%s' set in `FrameworkInfo`", principal, *info.Principal))
			return
		}
		at := acceptType(r)
		if at == "" {
			textError(w, http.StatusNotAcceptable, "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'")
			return
		}
		s := m.subscribe(call, at == "application/x-protobuf")
		if s == nil {
			textError(w, http.StatusServiceUnavailable, "Master is shutting down")
			return
		}
		m.serveStream(w, s)
		return
	}

	m.mu.Lock()
	fw := m.frameworks[call.FrameworkID.Value]
	if fw == nil || m.closed {
		m.mu.Unlock()
		textError(w, http.StatusBadRequest, "Framework cannot be found")
		return
	}
	if principal != "" && fw.info.Principal != nil && *fw.info.Principal != principal {
		m.mu.Unlock()
		textError(w, http.StatusBadRequest, fmt.Sprintf("Authenticated principal '%s' does not match principal '%s' set in `FrameworkInfo`", principal, *fw.info.Principal))
		return
	}
	if fw.stream == nil {
		m.mu.Unlock()
		textError(w, http.StatusForbidden, "Framework is not subscribed")
		return
	}
	sid := r.Header.Get("Mesos-Stream-Id")
	if sid == "" {
		m.mu.Unlock()
		textError(w, http.StatusBadRequest, "All non-subscribe calls should include the 'Mesos-Stream-Id' header")
		return
	}
	if sid != fw.stream.id {
		m.mu.Unlock()
		textError(w, http.StatusBadRequest, fmt.Sprintf("The stream ID '%s' included in this request didn't match the stream ID currently associated with framework ID %s", sid, fw.id))
		return
	}
	m.dispatchLocked(fw, call)
	m.mu.Unlock()
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

// validateCall mirrors scheduler::validation::call.
func validateCall(c *scheduler.Call) string {
	if c.Type == scheduler.Call_UNKNOWN {
		return "Expecting 'type' to be present"
	}
	if c.Type == scheduler.Call_SUBSCRIBE {
		if c.Subscribe == nil {
			return "Expecting 'subscribe' to be present"
		}
		if c.Subscribe.FrameworkInfo == nil {
			return "Expecting 'framework_info' to be present"
		}
		infoID := c.Subscribe.FrameworkInfo.ID
		if (c.FrameworkID == nil) != (infoID == nil) || (c.FrameworkID != nil && c.FrameworkID.Value != infoID.Value) {
			return "'framework_id' differs from 'subscribe.framework_info.id'"
		}
		return ""
	}
	if c.FrameworkID == nil {
		return "Expecting 'framework_id' to be present"
	}
	missing := func(name string) string { return "Expecting '" + name + "' to be present" }
	switch c.Type {
	case scheduler.Call_ACCEPT:
		if c.Accept == nil {
			return missing("accept")
		}
	case scheduler.Call_DECLINE:
		if c.Decline == nil {
			return missing("decline")
		}
	case scheduler.Call_KILL:
		if c.Kill == nil {
			return missing("kill")
		}
	case scheduler.Call_ACKNOWLEDGE:
		if c.Acknowledge == nil {
			return missing("acknowledge")
		}
		if len(c.Acknowledge.UUID) != 16 {
			return "Not a valid UUID"
		}
	case scheduler.Call_RECONCILE:
		if c.Reconcile == nil {
			return missing("reconcile")
		}
	case scheduler.Call_SHUTDOWN:
		if c.Shutdown == nil {
			return missing("shutdown")
		}
	case scheduler.Call_MESSAGE:
		if c.Message == nil {
			return missing("message")
		}
	case scheduler.Call_REQUEST:
		if c.Request == nil {
			return missing("request")
		}
	case scheduler.Call_UPDATE_FRAMEWORK:
		if c.UpdateFramework == nil {
			return missing("update_framework")
		}
		if id := c.UpdateFramework.FrameworkInfo.ID; id == nil || id.Value != c.FrameworkID.Value {
			return "'framework_id' differs from 'update_framework.framework_info.id'"
		}
	}
	return ""
}
