// Package consumers is meshgate's consumers HTTP filter for the meshgate
// proxy (docs/xds.md "Consumers"): it names the declared consumers among
// the callers a JWT provider authenticated, so that per-consumer counters
// (requests, rate-limit refusals) count them by name while staying bounded
// by configuration. API key clients and basic-auth users are declared by
// their own filter's config and need no table here.
//
// Envoy has no such filter: its config is an xds.type.v3.TypedStruct of
// type_url TypeURL, in an optional (is_optional) http_filters entry after
// the JWT filter, so that an Envoy given the same xDS skips it. The value
// is {jwt: [{provider, subject, consumer}, ...]}: a request whose verified
// token (httpfilter.Auth of kind jwt) comes from provider with sub subject
// is consumer's. The control plane adds the filter only to listeners where
// a JWT provider declares consumers.
package consumers

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// TypeURL is the type_url of the TypedStruct carrying the filter's config.
const TypeURL = "meshgate.dev/filters.http.consumers.v1.Consumers"

// MaxConsumers bounds the entries of a config.
const MaxConsumers = 10000

// maxLength bounds a provider, subject or consumer name.
const maxLength = 512

// Factory describes the consumers filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		TypeURL:    TypeURL,
		CheckValue: checkValue,
		Stats:      []string{httpfilter.StatConsumerRequests},
		New:        newFilter,
		NewPerRoute: func(proto.Message) (any, error) {
			return nil, errors.New("consumers: no per-route config (the listener's table holds every provider's)")
		},
	}
}

// subjectKey is a verified token's provider and subject.
type subjectKey struct{ provider, subject string }

// table maps the JWT subjects of declared consumers to their names.
type table map[subjectKey]string

// parse reads a config value.
func parse(v *structpb.Struct) (table, error) {
	t := table{}
	for key, f := range v.GetFields() {
		if key != "jwt" {
			return nil, fmt.Errorf("%s: not supported", strconv.Quote(key))
		}
		list, ok := f.GetKind().(*structpb.Value_ListValue)
		if !ok {
			return nil, errors.New("jwt: want a list")
		}
		entries := list.ListValue.GetValues()
		if len(entries) > MaxConsumers {
			return nil, fmt.Errorf("jwt: %d entries: at most %d", len(entries), MaxConsumers)
		}
		for i, e := range entries {
			s, ok := e.GetKind().(*structpb.Value_StructValue)
			if !ok {
				return nil, fmt.Errorf("jwt[%d]: want an object", i)
			}
			var k subjectKey
			var name string
			for field, fv := range s.StructValue.GetFields() {
				str, ok := fv.GetKind().(*structpb.Value_StringValue)
				if !ok || str.StringValue == "" || len(str.StringValue) > maxLength {
					return nil, fmt.Errorf("jwt[%d].%s: want a string of 1 to %d bytes", i, field, maxLength)
				}
				switch field {
				case "provider":
					k.provider = str.StringValue
				case "subject":
					k.subject = str.StringValue
				case "consumer":
					name = str.StringValue
				default:
					return nil, fmt.Errorf("jwt[%d].%s: not supported", i, strconv.Quote(field))
				}
			}
			if k.provider == "" || k.subject == "" || name == "" {
				return nil, fmt.Errorf("jwt[%d]: provider, subject and consumer are required", i)
			}
			if other, dup := t[k]; dup {
				return nil, fmt.Errorf("jwt[%d]: subject %q of provider %q is already consumer %q", i, k.subject, k.provider, other)
			}
			t[k] = name
		}
	}
	return t, nil
}

// checkValue is the filter's part of the subset of docs/xds.md.
func checkValue(v *structpb.Struct) []xdscheck.Violation {
	if _, err := parse(v); err != nil {
		return []xdscheck.Violation{{Path: "value", Reason: err.Error()}}
	}
	return nil
}

// filter is one consumers http_filters entry.
type filter struct {
	jwt      table
	requests *httpfilter.Counters
}

func newFilter(_ string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	v, ok := config.(*structpb.Struct)
	if !ok {
		return nil, fmt.Errorf("want a Struct, got %T", config)
	}
	t, err := parse(v)
	if err != nil {
		return nil, fmt.Errorf("consumers: %w", err)
	}
	return &filter{jwt: t, requests: env.Stats.Counters(httpfilter.StatConsumerRequests)}, nil
}

// Wrap returns the handler naming the consumer of a request before next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, rt *router.Route) {
		if a := httpfilter.AuthFrom(r.Context()); a != nil && a.Kind == httpfilter.AuthJWT && a.Consumer == "" {
			if name, ok := f.jwt[subjectKey{a.Provider, a.Principal}]; ok {
				named := *a // the Auth on the context is immutable: a copy names the consumer
				named.Consumer = name
				f.requests.Inc(named.ConsumerKey())
				r = r.WithContext(httpfilter.WithAuth(r.Context(), &named))
			}
		}
		next.ServeHTTP(w, r, rt)
	})
}
