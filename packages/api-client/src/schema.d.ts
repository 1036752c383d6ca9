// Generated from the gateway's OpenAPI document by `npm run generate -w @saga/api-client`
// (packages/api-client/src/generate.ts): do not edit by hand.

export interface paths {
    "/users": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Create a user (admin only)
         * @description Creates a user whose balance starts at `initialBalance`. Only an admin's token may create users.
         */
        post: operations["createUser"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/users/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Read a user
         * @description A user may read itself; another user's id answers 404, as a missing one does.
         */
        get: operations["getUser"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/users/{id}/orders": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Read a user with its orders
         * @description Composed by the gateway from user-service and order-service, asked at the same time. The orders come a page at a time, oldest first: at most `limit` (100 by default, 1000 at most); `next` (and the `Link` header) says where the next page starts, null on the last one. Paging never repeats an order nor skips one that existed when it began; orders placed since come after those (but for one placed the moment a page is read, which may be missed). A bad `limit` or `after` is a 400. Without its orders there is no answer: a 502 (504 when order-service was only slow; 503 with Retry-After when it sheds the read or the gateway is shutting down).
         */
        get: operations["getUserOrders"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/orders": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * List a user's orders
         * @description A page at a time, oldest first: at most `limit` orders (100 by default, 1000 at most), and while more follow a `Link: <…>; rel="next"` header (RFC 8288) to the next page. Paging never repeats an order nor skips one that existed when it began; orders placed since come after those (but for one placed the moment a page is read, which may be missed). A bad `limit` or `after` is a 400. A user's token may only ask for its own (another userId answers 404).
         */
        get: operations["listOrders"];
        put?: never;
        /**
         * Place an order: starts the saga
         * @description Creates the order PENDING and starts the saga: user-service reserves the amount from the user's balance, and the order becomes CONFIRMED, or CANCELED when the credit is refused (an unknown user included) or no answer came before the saga's deadline. Follow it with `GET /orders/{id}` and `Prefer: wait=N`. A user's token may only order for itself (another userId answers 404). When too many sagas are in flight, a 503 with Retry-After before any work. A 502 or 504 may follow a created order: send it again with the same Idempotency-Key.
         */
        post: operations["createOrder"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/orders/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Read an order, or wait for its outcome
         * @description With `Prefer: wait=N` (RFC 7240 §4.3) the answer is held until the order is CONFIRMED or CANCELED, or N seconds pass (then the order as it is, PENDING); N above 30 counts as 30. The response then says `Preference-Applied: wait=N`. A process that shuts down answers what it holds at once, with the order as it is (PENDING included). An order already decided, or none, is answered at once, and under load shed (503 with Retry-After) as any read is.
         */
        get: operations["getOrder"];
        put?: never;
        post?: never;
        /**
         * Cancel an order (it is not removed)
         * @description A cancel, not a removal: a PENDING or CONFIRMED order becomes CANCELED, an `order.canceled` event releases any credit reserved for it, and the order stays readable with `GET /orders/{id}` as CANCELED. Canceling a CANCELED order answers 204 again and changes nothing. A user's token may only cancel its own orders (another's answers 404, as an unknown one, and changes nothing).
         */
        delete: operations["cancelOrder"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Alive
         * @description Answers while the process runs; no token, never rate limited or shed.
         */
        get: operations["health"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/ready": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Ready to serve
         * @description The gateway is ready while every upstream (user-service, order-service) has an instance in rotation. No token, never rate limited or shed.
         */
        get: operations["ready"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        Error: {
            /** @description What went wrong, for a person; never a stack trace. */
            error: string;
            /** @description As in the X-Request-Id response header. A request refused before it is routed (a 400, 408, 417 or 431 that closes the connection) gets an id of its own, never the client's. */
            requestId?: string;
        };
        User: {
            /** Format: uuid */
            id: string;
            username: string;
            /** @description Minor units: the initial balance less the credit reserved. */
            balance: number;
            /**
             * Format: date-time
             * @description ISO 8601, UTC, milliseconds.
             */
            createdAt: string;
        };
        CreateUserRequest: {
            /**
             * @description Unique. 1 to 64 characters (code points), not all blank, no control characters (U+0000–U+001F, U+007F); stored without leading and trailing spaces.
             * @example alice
             */
            username: string;
            /**
             * @description Minor units (cents).
             * @example 5000
             */
            initialBalance: number;
        };
        UserOrders: {
            user: components["schemas"]["User"];
            /** @description Oldest first: a page of at most `limit`. */
            orders: components["schemas"]["Order"][];
            /** @description Where the next page starts: send it as `after` (with the same `limit`). Null on the last page. */
            next: string | null;
        };
        Order: {
            /** Format: uuid */
            id: string;
            /** Format: uuid */
            userId: string;
            amount: number;
            status: components["schemas"]["OrderStatus"];
            /**
             * Format: date-time
             * @description ISO 8601, UTC, milliseconds.
             */
            createdAt: string;
        };
        /**
         * @description PENDING until user-service answers; then CONFIRMED (credit reserved) or CANCELED (credit refused, canceled by DELETE, or past the saga's deadline unanswered: reason TIMEOUT). A CONFIRMED order can still be canceled by DELETE; CANCELED is final.
         * @enum {string}
         */
        OrderStatus: "PENDING" | "CONFIRMED" | "CANCELED";
        CreateOrderRequest: {
            /**
             * Format: uuid
             * @description The user who pays; a user's token may only name itself.
             */
            userId: string;
            /**
             * @description Minor units (cents).
             * @example 1000
             */
            amount: number;
        };
        Health: {
            /** @enum {string} */
            status: "UP";
        };
        NotReady: {
            /** @enum {string} */
            status: "DOWN";
            error: string;
        };
    };
    responses: {
        /** @description 400: The request is malformed: a body that is not JSON, a field missing, mistyped or out of range, an id that is not a UUID, a malformed Idempotency-Key, a page's `limit` out of range or an `after` that is not a cursor (or a request that cannot be parsed or made a URL of, such as an HTTP/1.1 request without Host, an invalid Host or a backslash in the path; then the connection is closed). */
        BadRequest: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. Absent when the request was refused before the app ran (it could not be parsed or made a URL of, or had no Host): such a request continues no trace. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 401: No bearer token, or one that is expired, not yet valid, badly signed, of another issuer or audience, or of an algorithm not accepted. */
        Unauthorized: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                /** @description RFC 6750: `Bearer realm="outbox-saga"`, with `error="invalid_token"` and why for a bad token. */
                "WWW-Authenticate": string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 403: The token is not an admin's: only an admin may create users. */
        Forbidden: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 404: No such user or order, or another user's (which answers exactly as a missing one; nothing is forwarded or written). */
        NotFound: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 408: The request's head or body did not arrive in time; the connection is closed. */
        RequestTimeout: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 409: The username is taken. */
        Conflict: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 413: The body is over 64 KiB. A body up to 1 MiB is read and dropped, so that the connection stays usable; past that the answer says `Connection: close`, and what the client still sends of it is read and dropped (for 5 s and 64 MiB at most) before the connection is closed, so that the client reads this answer rather than a reset. With `Expect: 100-continue`, a declared length over the limit is answered at once, without `100 Continue`, and the connection is closed. */
        PayloadTooLarge: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 415: The body is declared as something other than JSON: send `Content-Type: application/json`. */
        UnsupportedMediaType: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 417: The request's `Expect` asks for something other than `100-continue`, the only expectation served; the connection is closed. */
        ExpectationFailed: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 422: The Idempotency-Key was already used, by this caller, for a different request. */
        Unprocessable: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 429: The caller or its address is over its rate limit (token buckets on POST /users and POST /orders). */
        TooManyRequests: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                /** @description Seconds to wait before trying again. */
                "Retry-After"?: number;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 431: The request head is over 16 KiB; the connection is closed. */
        HeadersTooLarge: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 500: A bug; logged with the request id. */
        Internal: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 501: The request's `Transfer-Encoding` is something other than `chunked` (such as `gzip, chunked`): no other transfer coding is decoded. Send the body chunked, or with a Content-Length; the connection is closed. */
        NotImplemented: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 502: An upstream service is unreachable, reset the connection, failed, or refused the gateway's credential; or the composed read could not get the user's orders; or a service lost its database connection while a write was on its way there, and had no answer. A write answered 502 after it was sent on may have been applied: send it again with the same Idempotency-Key, which answers the first response if it was. */
        BadGateway: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 503: Shed, to stay fast under overload: a lane's bound and queue are full, order-service has too many sagas in flight for a new order, a service cannot reach its database or its database cannot write (read only after a failover, a full disk) (for a read, or a write that never reached the database or that the database refused or rolled back; one whose answer was lost is a 502 or 504), or the token's keys cannot be fetched; or the gateway is shutting down, and the request was a read or was not sent on (a write it had sent is a 504). Retry after `Retry-After` seconds. */
        Unavailable: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                /** @description Seconds to wait before trying again. */
                "Retry-After"?: number;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
        /** @description 504: The upstream service did not answer in time (5 s, plus any Prefer: wait on an order's read), or had not answered a write when the gateway shut down, or its database did not answer a write in time. The outcome is unknown: a write may have been applied. Send it again with the same Idempotency-Key, which answers the first response if it was. */
        GatewayTimeout: {
            headers: {
                /** @description This request's id. */
                "X-Request-Id"?: string;
                /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                traceresponse?: string;
                [name: string]: unknown;
            };
            content: {
                "application/json": components["schemas"]["Error"];
            };
        };
    };
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    createUser: {
        parameters: {
            query?: never;
            header?: {
                /** @description 1 to 200 visible ASCII characters. A retry with the same key and the same request gets the first response back and creates nothing; the same key with a different request is a 422. Kept per caller for at least the services' INBOX_RETENTION_HOURS (15 days by default). */
                "Idempotency-Key"?: string;
                /** @description Your id for this request (up to 128 characters of `A-Za-z0-9_-=`); echoed in the response and logs. Anything else is replaced by a new one. */
                "X-Request-Id"?: string;
                /** @description W3C Trace Context (https://www.w3.org/TR/trace-context/). Continued into the events the request causes; a malformed one (or one of version `ff`) starts a new trace. The answer's `traceresponse` names the trace either way. */
                traceparent?: string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CreateUserRequest"];
            };
        };
        responses: {
            /** @description Created (or, for a retried Idempotency-Key, the first response again). */
            201: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["User"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            403: components["responses"]["Forbidden"];
            408: components["responses"]["RequestTimeout"];
            409: components["responses"]["Conflict"];
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            417: components["responses"]["ExpectationFailed"];
            422: components["responses"]["Unprocessable"];
            429: components["responses"]["TooManyRequests"];
            431: components["responses"]["HeadersTooLarge"];
            500: components["responses"]["Internal"];
            501: components["responses"]["NotImplemented"];
            502: components["responses"]["BadGateway"];
            503: components["responses"]["Unavailable"];
            504: components["responses"]["GatewayTimeout"];
        };
    };
    getUser: {
        parameters: {
            query?: never;
            header?: {
                /** @description Your id for this request (up to 128 characters of `A-Za-z0-9_-=`); echoed in the response and logs. Anything else is replaced by a new one. */
                "X-Request-Id"?: string;
                /** @description W3C Trace Context (https://www.w3.org/TR/trace-context/). Continued into the events the request causes; a malformed one (or one of version `ff`) starts a new trace. The answer's `traceresponse` names the trace either way. */
                traceparent?: string;
            };
            path: {
                /** @description The user's id. */
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The user. */
            200: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["User"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
            408: components["responses"]["RequestTimeout"];
            417: components["responses"]["ExpectationFailed"];
            431: components["responses"]["HeadersTooLarge"];
            500: components["responses"]["Internal"];
            501: components["responses"]["NotImplemented"];
            502: components["responses"]["BadGateway"];
            503: components["responses"]["Unavailable"];
            504: components["responses"]["GatewayTimeout"];
        };
    };
    getUserOrders: {
        parameters: {
            query?: {
                /** @description The most orders in the page (1 to 1000; 100 without it). Anything else is a 400. */
                limit?: number;
                /** @description Where the page starts: the cursor the previous page gave (`next`, or the `after` of its `Link`), passed back as it came. Without it, the oldest order. A value of another form is a 400. */
                after?: string;
            };
            header?: {
                /** @description Your id for this request (up to 128 characters of `A-Za-z0-9_-=`); echoed in the response and logs. Anything else is replaced by a new one. */
                "X-Request-Id"?: string;
                /** @description W3C Trace Context (https://www.w3.org/TR/trace-context/). Continued into the events the request causes; a malformed one (or one of version `ff`) starts a new trace. The answer's `traceresponse` names the trace either way. */
                traceparent?: string;
            };
            path: {
                /** @description The user's id. */
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The user and a page of its orders. */
            200: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    /** @description `</users/{id}/orders?limit=…&after=…>; rel="next"`: the next page (the same `limit`), while more orders follow; absent on the last page. */
                    Link?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["UserOrders"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
            408: components["responses"]["RequestTimeout"];
            417: components["responses"]["ExpectationFailed"];
            431: components["responses"]["HeadersTooLarge"];
            500: components["responses"]["Internal"];
            501: components["responses"]["NotImplemented"];
            502: components["responses"]["BadGateway"];
            503: components["responses"]["Unavailable"];
            504: components["responses"]["GatewayTimeout"];
        };
    };
    listOrders: {
        parameters: {
            query: {
                /** @description Whose orders. */
                userId: string;
                /** @description The most orders in the page (1 to 1000; 100 without it). Anything else is a 400. */
                limit?: number;
                /** @description Where the page starts: the cursor the previous page gave (`next`, or the `after` of its `Link`), passed back as it came. Without it, the oldest order. A value of another form is a 400. */
                after?: string;
            };
            header?: {
                /** @description Your id for this request (up to 128 characters of `A-Za-z0-9_-=`); echoed in the response and logs. Anything else is replaced by a new one. */
                "X-Request-Id"?: string;
                /** @description W3C Trace Context (https://www.w3.org/TR/trace-context/). Continued into the events the request causes; a malformed one (or one of version `ff`) starts a new trace. The answer's `traceresponse` names the trace either way. */
                traceparent?: string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description A page of the orders, oldest first. */
            200: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    /** @description `</orders?userId=…&limit=…&after=…>; rel="next"`: the next page (the same `limit`), while more orders follow; absent on the last page. */
                    Link?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Order"][];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
            408: components["responses"]["RequestTimeout"];
            417: components["responses"]["ExpectationFailed"];
            431: components["responses"]["HeadersTooLarge"];
            500: components["responses"]["Internal"];
            501: components["responses"]["NotImplemented"];
            502: components["responses"]["BadGateway"];
            503: components["responses"]["Unavailable"];
            504: components["responses"]["GatewayTimeout"];
        };
    };
    createOrder: {
        parameters: {
            query?: never;
            header?: {
                /** @description 1 to 200 visible ASCII characters. A retry with the same key and the same request gets the first response back and creates nothing; the same key with a different request is a 422. Kept per caller for at least the services' INBOX_RETENTION_HOURS (15 days by default). */
                "Idempotency-Key"?: string;
                /** @description Your id for this request (up to 128 characters of `A-Za-z0-9_-=`); echoed in the response and logs. Anything else is replaced by a new one. */
                "X-Request-Id"?: string;
                /** @description W3C Trace Context (https://www.w3.org/TR/trace-context/). Continued into the events the request causes; a malformed one (or one of version `ff`) starts a new trace. The answer's `traceresponse` names the trace either way. */
                traceparent?: string;
            };
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CreateOrderRequest"];
            };
        };
        responses: {
            /** @description Created, PENDING (or, for a retried Idempotency-Key, the first response again). */
            201: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Order"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
            408: components["responses"]["RequestTimeout"];
            413: components["responses"]["PayloadTooLarge"];
            415: components["responses"]["UnsupportedMediaType"];
            417: components["responses"]["ExpectationFailed"];
            422: components["responses"]["Unprocessable"];
            429: components["responses"]["TooManyRequests"];
            431: components["responses"]["HeadersTooLarge"];
            500: components["responses"]["Internal"];
            501: components["responses"]["NotImplemented"];
            502: components["responses"]["BadGateway"];
            503: components["responses"]["Unavailable"];
            504: components["responses"]["GatewayTimeout"];
        };
    };
    getOrder: {
        parameters: {
            query?: never;
            header?: {
                /** @description `wait=N`: hold the answer until the order leaves PENDING, at most N (≤ 30) seconds. */
                Prefer?: string;
                /** @description Your id for this request (up to 128 characters of `A-Za-z0-9_-=`); echoed in the response and logs. Anything else is replaced by a new one. */
                "X-Request-Id"?: string;
                /** @description W3C Trace Context (https://www.w3.org/TR/trace-context/). Continued into the events the request causes; a malformed one (or one of version `ff`) starts a new trace. The answer's `traceresponse` names the trace either way. */
                traceparent?: string;
            };
            path: {
                /** @description The order's id. */
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The order. */
            200: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    /** @description `wait=N` when the request's `Prefer: wait=N` was honoured. */
                    "Preference-Applied"?: string;
                    /** @description `prefer` */
                    Vary?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Order"];
                };
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
            408: components["responses"]["RequestTimeout"];
            417: components["responses"]["ExpectationFailed"];
            431: components["responses"]["HeadersTooLarge"];
            500: components["responses"]["Internal"];
            501: components["responses"]["NotImplemented"];
            502: components["responses"]["BadGateway"];
            503: components["responses"]["Unavailable"];
            504: components["responses"]["GatewayTimeout"];
        };
    };
    cancelOrder: {
        parameters: {
            query?: never;
            header?: {
                /** @description Your id for this request (up to 128 characters of `A-Za-z0-9_-=`); echoed in the response and logs. Anything else is replaced by a new one. */
                "X-Request-Id"?: string;
                /** @description W3C Trace Context (https://www.w3.org/TR/trace-context/). Continued into the events the request causes; a malformed one (or one of version `ff`) starts a new trace. The answer's `traceresponse` names the trace either way. */
                traceparent?: string;
            };
            path: {
                /** @description The order's id. */
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Canceled (or already was). */
            204: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    [name: string]: unknown;
                };
                content?: never;
            };
            400: components["responses"]["BadRequest"];
            401: components["responses"]["Unauthorized"];
            404: components["responses"]["NotFound"];
            408: components["responses"]["RequestTimeout"];
            417: components["responses"]["ExpectationFailed"];
            431: components["responses"]["HeadersTooLarge"];
            500: components["responses"]["Internal"];
            501: components["responses"]["NotImplemented"];
            502: components["responses"]["BadGateway"];
            503: components["responses"]["Unavailable"];
            504: components["responses"]["GatewayTimeout"];
        };
    };
    health: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Alive. */
            200: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Health"];
                };
            };
            400: components["responses"]["BadRequest"];
            408: components["responses"]["RequestTimeout"];
            417: components["responses"]["ExpectationFailed"];
            431: components["responses"]["HeadersTooLarge"];
            501: components["responses"]["NotImplemented"];
        };
    };
    ready: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Ready. */
            200: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Health"];
                };
            };
            400: components["responses"]["BadRequest"];
            408: components["responses"]["RequestTimeout"];
            417: components["responses"]["ExpectationFailed"];
            431: components["responses"]["HeadersTooLarge"];
            501: components["responses"]["NotImplemented"];
            /** @description Not ready: why. */
            503: {
                headers: {
                    /** @description This request's id: the client's own when it sent a usable one, otherwise a new one. */
                    "X-Request-Id"?: string;
                    /** @description The W3C trace of this request, as `00-<trace id>-<the gateway's span id>-<flags>`: yours continued when you sent a usable `traceparent`, otherwise a new one. Its trace id is the one its events and the services' logs carry. W3C Trace Context's drafts name this response header; its value is a `traceparent`, to send with a request that follows from this one. */
                    traceresponse?: string;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["NotReady"];
                };
            };
        };
    };
}
