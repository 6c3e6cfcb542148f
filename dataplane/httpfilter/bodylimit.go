package httpfilter

import "errors"

// ErrRequestBodyTooLarge is what a request body limited by a filter
// returns from Read once more bytes than its limit have passed: the router
// then answers 413 rather than 400, as Envoy's buffer filter does.
var ErrRequestBodyTooLarge = errors.New("request body over the route's limit")

// ErrResponseBodyTooLarge is what a response writer limited by a filter
// returns from Write once the filter answered in place of the response
// (its body over the route's limit): the router stops copying the
// response, which the filter has logged.
var ErrResponseBodyTooLarge = errors.New("response body over the route's limit")
