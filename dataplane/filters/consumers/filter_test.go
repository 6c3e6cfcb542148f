package consumers

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

func value(t *testing.T, jwt ...any) *structpb.Struct {
	t.Helper()
	v, err := structpb.NewStruct(map[string]any{"jwt": jwt})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func entry(provider, subject, consumer string) map[string]any {
	return map[string]any{"provider": provider, "subject": subject, "consumer": consumer}
}

// TestParseRefusesBadValues: unknown fields, missing or empty ones, a
// subject declared twice and too many entries are refused, naming the
// entry.
func TestParseRefusesBadValues(t *testing.T) {
	t.Parallel()
	many := make([]any, MaxConsumers+1)
	for i := range many {
		many[i] = entry("p", fmt.Sprint("s", i), "c")
	}
	for _, tc := range []struct {
		name  string
		value map[string]any
		want  string
	}{
		{"unknown key", map[string]any{"apikey": []any{}}, `"apikey": not supported`},
		{"not a list", map[string]any{"jwt": "x"}, "jwt: want a list"},
		{"not an object", map[string]any{"jwt": []any{"x"}}, "jwt[0]: want an object"},
		{"missing consumer", map[string]any{"jwt": []any{map[string]any{"provider": "p", "subject": "s"}}}, "jwt[0]: provider, subject and consumer are required"},
		{"empty subject", map[string]any{"jwt": []any{entry("p", "", "c")}}, "jwt[0].subject: want a string"},
		{"unknown field", map[string]any{"jwt": []any{map[string]any{"provider": "p", "subject": "s", "consumer": "c", "x": "y"}}}, `jwt[0]."x": not supported`},
		{"subject twice", map[string]any{"jwt": []any{entry("p", "s", "a"), entry("p", "s", "b")}}, `jwt[1]: subject "s" of provider "p" is already consumer "a"`},
		{"too many", map[string]any{"jwt": many}, fmt.Sprintf("at most %d", MaxConsumers)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := structpb.NewStruct(tc.value)
			if err != nil {
				t.Fatal(err)
			}
			_, err = parse(v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parse: %v, want an error with %q", err, tc.want)
			}
			if violations := checkValue(v); len(violations) != 1 {
				t.Errorf("checkValue: %v, want one violation", violations)
			}
		})
	}
}

// TestCountsDeclaredJWTConsumersOnly: a verified token whose provider and
// subject are declared is that consumer's request (Auth.Consumer, counted
// under jwt/<name>); the same subject of another provider, the subjects no
// one declared (a thousand of them), unauthenticated requests and API key
// consumers (counted by their own filter) add no label: the family stays
// bounded by the declarations.
func TestCountsDeclaredJWTConsumersOnly(t *testing.T) {
	t.Parallel()
	stats := new(httpfilter.Stats)
	f, err := newFilter("meshgate.consumers", value(t, entry("ns/p/idp", "svc-billing", "billing"), entry("ns/p/idp", "svc-ops", "ops")),
		httpfilter.Env{Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	var seen *httpfilter.Auth
	h := f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, _ *router.Route) {
		seen = httpfilter.AuthFrom(r.Context())
		w.WriteHeader(http.StatusOK)
	}))
	serve := func(a *httpfilter.Auth) *httpfilter.Auth {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if a != nil {
			r = r.WithContext(httpfilter.WithAuth(r.Context(), a))
		}
		seen = nil
		h.ServeHTTP(httptest.NewRecorder(), r, nil)
		return seen
	}
	jwt := func(provider, sub string) *httpfilter.Auth {
		return &httpfilter.Auth{Kind: httpfilter.AuthJWT, Provider: provider, Principal: sub}
	}

	for range 3 {
		got := serve(jwt("ns/p/idp", "svc-billing"))
		if got == nil || got.Consumer != "billing" || got.Principal != "svc-billing" || got.ConsumerKey() != "jwt/billing" {
			t.Fatalf("declared subject: auth %+v, want consumer billing, principal svc-billing", got)
		}
	}
	shared := jwt("ns/p/idp", "svc-ops")
	if got := serve(shared); got.Consumer != "ops" || shared.Consumer != "" {
		t.Errorf("the Auth on the context was changed (%+v) or the consumer not named (%+v)", shared, got)
	}
	if got := serve(jwt("ns/p/other", "svc-billing")); got.Consumer != "" {
		t.Errorf("another provider's subject: consumer %q, want none", got.Consumer)
	}
	for i := range 1000 {
		if got := serve(jwt("ns/p/idp", fmt.Sprint("user-", i))); got.Consumer != "" {
			t.Fatalf("undeclared subject: consumer %q", got.Consumer)
		}
	}
	if got := serve(nil); got != nil {
		t.Errorf("unauthenticated: auth %+v", got)
	}
	if got := serve(&httpfilter.Auth{Kind: httpfilter.AuthAPIKey, Principal: "acme", Consumer: "acme"}); got.ConsumerKey() != "apikey/acme" {
		t.Errorf("API key consumer: %+v", got)
	}

	want := map[string]uint64{"jwt/billing": 3, "jwt/ops": 1}
	if got := stats.Counters(httpfilter.StatConsumerRequests).Snapshot(); !maps.Equal(got, want) {
		t.Errorf("consumer_requests = %v, want %v", got, want)
	}
}
