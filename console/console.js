// luahook console: three views (deliveries, one delivery, live) over the /-/api/ JSON API.
// Every piece of data reaches the DOM through text nodes (el(), textContent), never as
// markup: event bodies, headers and errors are written by whoever can post an event.
'use strict';
(function () {
    const view = document.getElementById('view');
    const flashBox = document.getElementById('flash');
    const notKept = document.getElementById('notkept');
    const PAGE = 50;
    const STATUSES = ['pending', 'ok', 'retrying', 'dead', 'duplicate', 'none'];
    const SINCE = [['', 'any time'], ['15m', 'last 15 min'], ['1h', 'last hour'],
        ['6h', 'last 6 hours'], ['24h', 'last 24 hours'], ['7d', 'last 7 days']];
    // A tree of more nodes than this is shown as indented text: the DOM would be slow.
    const TREE_MAX_NODES = 20000;

    const state = {
        csrf: null,
        journal: null,     // true, false, or null until /-/api/live answered
        timers: [],        // the current view's polling; cleared on every route change
        route: 0,          // bumped on every route change: late answers of a left view are dropped
        pollFailed: false, // the last polling failed: its message is up
        actions: [],       // the actions the loaded handlers take, offered by the action filter
    };

    // ------------------------------------------------------------------ DOM helpers

    // el('td', {class: 'x', title: t}, 'text', child...): strings become text nodes.
    function el(tag, attrs, ...kids) {
        const node = document.createElement(tag);
        setAttrs(node, attrs);
        append(node, kids);
        return node;
    }

    const SVG_NS = 'http://www.w3.org/2000/svg';
    function svg(tag, attrs, ...kids) {
        const node = document.createElementNS(SVG_NS, tag);
        setAttrs(node, attrs);
        append(node, kids);
        return node;
    }

    function setAttrs(node, attrs) {
        for (const [k, v] of Object.entries(attrs || {})) {
            if (v === null || v === undefined || v === false) continue;
            if (k === 'on') {
                for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
            } else {
                node.setAttribute(k, v === true ? '' : String(v));
            }
        }
    }

    function append(node, kids) {
        for (const kid of kids.flat(Infinity)) {
            if (kid === null || kid === undefined || kid === false) continue;
            node.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
        }
    }

    function clear(node) {
        while (node.firstChild) node.removeChild(node.firstChild);
        return node;
    }

    function badge(status, text) {
        return el('span', { class: 'badge st-' + cssName(status) }, text || status || '?');
    }

    // A status or outcome as a class name part: only letters, so data cannot add classes.
    function cssName(s) {
        return String(s || 'none').toLowerCase().replace(/[^a-z]/g, '');
    }

    function flash(text, kind) {
        flashBox.className = 'banner' + (kind ? ' ' + kind : '');
        flashBox.textContent = text;
        flashBox.hidden = !text;
    }

    // ------------------------------------------------------------------ formatting

    function pad(n) {
        return String(n).padStart(2, '0');
    }

    // Local time: the clock only for today, the date too before.
    function fmtTime(t) {
        if (t === null || t === undefined) return '—';
        const d = new Date(t * 1000), now = new Date();
        const clock = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
        if (d.toDateString() === now.toDateString()) return clock;
        return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + clock;
    }

    function isoTime(t) {
        return t === null || t === undefined ? '' : new Date(t * 1000).toISOString();
    }

    function fmtDuration(s) {
        if (s === null || s === undefined || !isFinite(s)) return '—';
        if (s < 0) s = 0;
        if (s < 1) return Math.round(s * 1000) + ' ms';
        if (s < 10) return s.toFixed(2) + ' s';
        if (s < 60) return s.toFixed(1) + ' s';
        if (s < 3600) return Math.floor(s / 60) + 'm ' + Math.floor(s % 60) + 's';
        if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
        return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
    }

    function fmtAgo(t) {
        if (t === null || t === undefined) return '';
        const s = Date.now() / 1000 - t;
        if (s < 0) return 'in ' + fmtDuration(-s);
        if (s < 1) return 'just now';
        // the larger unit is enough: "3m ago", "2h ago"
        return (s < 60 ? Math.floor(s) + 's' : fmtDuration(s).replace(/ \d+[smh]$/, '')) + ' ago';
    }

    function fmtBytes(n) {
        if (n === null || n === undefined) return '—';
        if (n < 1024) return n + ' B';
        if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
        return (n / 1024 / 1024).toFixed(1) + ' MiB';
    }

    function plural(n, what) {
        return n + ' ' + what + (n === 1 ? '' : 's');
    }

    function fmtCount(n) {
        return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
    }

    function timeCell(t) {
        return el('span', { class: 'nowrap', title: isoTime(t) + ' · ' + fmtAgo(t) }, fmtTime(t));
    }

    // ------------------------------------------------------------------ the API

    class ApiError extends Error {
        constructor(status, message, body) {
            super(message);
            this.status = status;
            this.body = body;
        }
    }

    // Answers the JSON of a /-/api/ request; a 401 (session over) goes back to sign-in.
    async function api(path, opts) {
        const init = { credentials: 'same-origin', cache: 'no-store', headers: {} };
        if (opts && opts.method && opts.method !== 'GET') {
            init.method = opts.method;
            init.headers['X-CSRF-Token'] = state.csrf || '';
        }
        let res;
        try {
            res = await fetch('/-/api/' + path, init);
        } catch (e) {
            throw new ApiError(0, 'luahook does not answer (' + e.message + ')');
        }
        if (res.status === 401) {
            signedOut();
            throw new ApiError(401, 'signed out');
        }
        let body = null;
        try {
            body = await res.json();
        } catch (e) {
            throw new ApiError(res.status, 'the answer is not JSON (HTTP ' + res.status + ')');
        }
        if (!res.ok || !body || body.ok === false) {
            throw new ApiError(res.status, (body && body.error) || 'HTTP ' + res.status, body);
        }
        return body;
    }

    function signedOut() {
        location.replace('/-/signin' + (location.hash || ''));
    }

    // The API's 404 without a journal, told apart from an unknown delivery.
    function isNoJournal(err) {
        return err instanceof ApiError && err.status === 404 && /journal|state-dir/.test(err.message);
    }

    function setJournal(on) {
        state.journal = on;
        notKept.hidden = on !== false;
    }

    // ------------------------------------------------------------------ routing

    function parseHash() {
        const raw = location.hash.replace(/^#/, '') || '/';
        const q = raw.indexOf('?');
        const path = q < 0 ? raw : raw.slice(0, q);
        const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
        return { path, params };
    }

    function listHash(params) {
        const p = new URLSearchParams();
        for (const k of ['status', 'action', 'since', 'q', 'before']) {
            if (params[k]) p.set(k, params[k]);
        }
        const s = p.toString();
        return '#/' + (s ? '?' + s : '');
    }

    function deliveryHash(key) {
        return '#/d/' + encodeURIComponent(key);
    }

    function every(ms, fn) {
        const route = state.route;
        let busy = false;
        const id = setInterval(async function () {
            if (busy || route !== state.route || document.hidden) return;
            busy = true;
            try {
                await fn();
                if (state.pollFailed) flash(''); // luahook answers again
                state.pollFailed = false;
            } catch (e) {
                if (route === state.route) flash(String(e.message || e), 'error');
                state.pollFailed = true;
            } finally {
                busy = false;
            }
        }, ms);
        state.timers.push(id);
    }

    function route() {
        state.route++;
        for (const id of state.timers) clearInterval(id);
        state.timers = [];
        state.pollFailed = false;
        flash('');
        const { path, params } = parseHash();
        const m = /^\/d\/(.+)$/.exec(path);
        let tab = 'deliveries';
        let render;
        if (path === '/' || path === '') {
            render = () => showList(params);
        } else if (m) {
            render = () => showDelivery(decodeURIComponent(m[1]));
        } else if (path === '/live') {
            tab = 'live';
            render = () => showLive();
        } else {
            render = () => {
                clear(view).append(el('p', { class: 'empty' }, 'No such view. ',
                    el('a', { href: '#/' }, 'See the deliveries.')));
            };
        }
        document.getElementById('nav-deliveries').classList.toggle('active', tab === 'deliveries');
        document.getElementById('nav-live').classList.toggle('active', tab === 'live');
        const route = state.route;
        // a thrown error (a malformed %-escape in the #) lands in the catch as well
        Promise.resolve().then(render).catch(function (e) {
            if (route !== state.route || (e instanceof ApiError && e.status === 401)) return;
            clear(view).append(el('p', { class: 'banner error' }, String(e.message || e)));
        });
    }

    // ------------------------------------------------------------------ deliveries

    async function showList(params) {
        const route = state.route;
        const f = {
            status: params.get('status') || '',
            action: params.get('action') || '',
            since: params.get('since') || '',
            q: params.get('q') || '',
            before: params.get('before') || '',
        };
        document.title = 'Deliveries · luahook';
        if (state.journal === false) {
            renderNoJournal();
            return;
        }
        const toolbar = listToolbar(f);
        const chips = el('div', { class: 'chips', id: 'status-chips' });
        const table = el('div', { class: 'table-wrap' }, el('p', { class: 'empty' }, 'Loading…'));
        const pager = el('div', { class: 'pager' });
        clear(view).append(toolbar, chips, table, pager);

        let shown = '';
        async function load() {
            const q = new URLSearchParams({ limit: String(PAGE) });
            for (const k of ['status', 'action', 'since', 'q', 'before']) {
                if (f[k]) q.set(k, f[k]);
            }
            let page, stats;
            try {
                [page, stats] = await Promise.all([
                    api('events?' + q.toString()),
                    api('stats').catch(() => null),
                ]);
            } catch (e) {
                if (isNoJournal(e)) {
                    setJournal(false);
                    if (route === state.route) renderNoJournal();
                    return;
                }
                throw e;
            }
            if (route !== state.route) return;
            // Redrawn only when something changed: a row being clicked stays put.
            const key = JSON.stringify([page, stats]);
            if (key === shown) return;
            shown = key;
            renderChips(chips, f, stats && stats.stats);
            clear(table).append(eventsTable(page.events, f));
            renderPager(pager, f, page);
        }
        try {
            await load();
        } catch (e) {
            // a filter the API refuses (a since= typed into the #): its error where the rows
            // would be, the filters kept to mend it
            if (route !== state.route || (e instanceof ApiError && e.status === 401)) return;
            clear(table).append(el('p', { class: 'banner error', id: 'list-error' }, String(e.message || e)));
            // a refused filter would only be refused again; luahook away is polled until back
            if (e instanceof ApiError && e.status >= 400 && e.status < 500) return;
        }
        // The first page follows new deliveries; a page further back stays as it was.
        if (!f.before) every(4000, load);
    }

    function listToolbar(f) {
        function go(changes) {
            const next = Object.assign({}, f, changes, { before: '' });
            location.hash = listHash(next);
        }
        const status = el('select', { id: 'filter-status', name: 'status', 'aria-label': 'status' },
            el('option', { value: '' }, 'any status'),
            STATUSES.map(s => el('option', { value: s, selected: s === f.status }, s)));
        status.addEventListener('change', () => go({ status: status.value }));
        const since = el('select', { id: 'filter-since', name: 'since', 'aria-label': 'received' },
            SINCE.map(([v, label]) => el('option', { value: v, selected: v === f.since }, label)));
        if (f.since && !SINCE.some(([v]) => v === f.since)) {
            since.append(el('option', { value: f.since, selected: true }, 'since ' + f.since));
        }
        since.addEventListener('change', () => go({ since: since.value }));
        const action = el('input', {
            id: 'filter-action', name: 'action', type: 'text', value: f.action, list: 'known-actions',
            placeholder: 'action, e.g. ANNOTATION_CREATED', 'aria-label': 'action', size: 26,
            spellcheck: 'false',
        });
        const search = el('input', {
            id: 'search', name: 'q', type: 'search', value: f.q,
            placeholder: 'search by delivery id, whole or its first characters (press /)',
            'aria-label': 'delivery id', spellcheck: 'false', autocomplete: 'off',
        });
        const known = el('datalist', { id: 'known-actions' },
            state.actions.map(a => el('option', { value: a })));
        const form = el('form', { class: 'toolbar', id: 'filters' }, known,
            el('label', {}, 'Status', status),
            el('label', {}, 'Received', since),
            el('label', {}, 'Action', action),
            el('span', { class: 'grow' }, search),
            el('button', { type: 'submit', class: 'primary', id: 'apply' }, 'Search'),
            (f.status || f.action || f.since || f.q) ?
                el('a', { href: '#/', class: 'button', id: 'clear-filters' }, 'Clear') : null);
        form.addEventListener('submit', function (ev) {
            ev.preventDefault();
            go({ action: action.value.trim(), q: search.value.trim() });
        });
        return form;
    }

    function renderChips(box, f, stats) {
        clear(box);
        if (!stats) return;
        const d = stats.deliveries;
        const all = Object.assign({}, f, { status: '' });
        box.append(el('a', { href: listHash(all), class: 'chip' + (f.status ? '' : ' active') },
            'all', el('b', {}, fmtCount(d.total))));
        for (const s of STATUSES) {
            if (!d[s] && s !== 'dead' && s !== 'retrying') continue;
            const next = Object.assign({}, f, { status: s });
            box.append(el('a', {
                href: listHash(next), class: 'chip' + (f.status === s ? ' active' : ''),
                'data-status': s,
            }, el('span', { class: 'dot st-' + s }), s, el('b', {}, fmtCount(d[s]))));
        }
    }

    function eventsTable(events, f) {
        if (!events.length) {
            const filtered = f.status || f.action || f.since || f.q;
            return el('p', { class: 'empty', id: 'no-deliveries' }, filtered ?
                'No delivery matches these filters.' : 'No deliveries yet: post an event to luahook.');
        }
        const body = el('tbody', {}, events.map(function (e) {
            const link = deliveryHash(e.delivery || e.id);
            const failed = e.failed ? e.failed + ' of ' + e.handlers + ' failed' : null;
            const tr = el('tr', { 'data-id': e.id, 'data-delivery': e.delivery, 'data-status': e.status },
                el('td', {}, timeCell(e.received)),
                el('td', { class: 'mono' }, e.action),
                el('td', { class: 'num' }, e.project === null ? '—' : String(e.project)),
                el('td', { class: 'delivery' }, el('a', { href: link }, e.delivery || String(e.id))),
                el('td', { class: 'nowrap' }, badge(e.status), failed ? el('span', { class: 'aside' }, failed) : null),
                el('td', { class: 'num nowrap' }, e.finished !== null ? fmtDuration(e.finished - e.received) :
                    (e.status === 'pending' || e.status === 'retrying' ? 'not done' : '—')),
                el('td', { class: 'num hide-narrow' }, String(e.handlers)),
                el('td', { class: 'num hide-narrow' }, String(e.attempts)));
            tr.addEventListener('click', function (ev) {
                // a link or a selection keeps its own meaning
                if (ev.target.closest('a') || String(window.getSelection())) return;
                location.hash = link;
            });
            return tr;
        }));
        return el('table', { class: 'list', id: 'deliveries' },
            el('thead', {}, el('tr', {},
                el('th', {}, 'Received'), el('th', {}, 'Action'), el('th', { class: 'num' }, 'Project'),
                el('th', {}, 'Delivery id'), el('th', {}, 'Outcome'), el('th', { class: 'num' }, 'Duration'),
                el('th', { class: 'num hide-narrow', title: 'handler runs' }, 'Runs'),
                el('th', { class: 'num hide-narrow' }, 'Attempts'))),
            body);
    }

    function renderPager(box, f, page) {
        clear(box);
        box.append(el('span', { class: 'muted small' }, page.events.length + ' shown' +
            (f.before ? ', older than #' + f.before : ', newest first')));
        if (f.before) {
            box.append(el('a', { class: 'button', id: 'newest', href: listHash(Object.assign({}, f, { before: '' })) },
                '« Newest'));
        }
        if (page.next !== null && page.next !== undefined) {
            box.append(el('a', {
                class: 'button', id: 'older',
                href: listHash(Object.assign({}, f, { before: String(page.next) })),
            }, 'Older »'));
        }
    }

    function renderNoJournal() {
        clear(view).append(el('div', { class: 'card empty', id: 'no-journal' },
            el('p', {}, 'deliveries are not kept: start luahook with --state-dir'),
            el('p', {}, el('a', { href: '#/live' }, 'See the live view'))));
    }

    // ------------------------------------------------------------------ one delivery

    async function showDelivery(key) {
        const route = state.route;
        document.title = key + ' · luahook';
        if (state.journal === false) {
            renderNoJournal();
            return;
        }
        let ev;
        try {
            // '.' and '..' are path segments to fetch(): /-/api/events/.. would be /-/api/
            if (key === '.' || key === '..') throw new ApiError(404, 'no such delivery');
            ev = (await api('events/' + encodeURIComponent(key))).event;
        } catch (e) {
            if (isNoJournal(e)) {
                setJournal(false);
                renderNoJournal();
                return;
            }
            if (e instanceof ApiError && e.status === 404) {
                clear(view).append(el('div', { class: 'card empty', id: 'not-found' },
                    el('p', {}, 'No delivery ', el('code', {}, key), ' in the journal (never received, ' +
                        'or pruned after --keep).'),
                    el('p', {}, el('a', { href: '#/' }, 'Back to the deliveries'))));
                return;
            }
            throw e;
        }
        if (route !== state.route) return;
        const summary = el('section', { class: 'card', id: 'delivery' });
        const runs = el('section', { class: 'section', id: 'runs' });
        const headers = el('section', {}, el('h2', {}, 'Headers'));
        const body = el('section', { id: 'body' });
        clear(view).append(
            el('div', { class: 'crumbs' }, el('a', { href: '#/', id: 'back' }, '← Deliveries')),
            summary, runs,
            el('div', { class: 'grid-2 section' }, headers, body));

        let shown = '';
        function draw(e, force) {
            const k = JSON.stringify([e.status, e.finished, e.runs]);
            if (k === shown && !force) return;
            shown = k;
            renderSummary(summary, e, draw);
            renderRuns(runs, e);
        }
        draw(ev);
        renderHeaders(headers, ev.headers || {});
        renderBody(body, ev);
        // Follow a delivery that is not done (handlers running, retries, a redelivery).
        every(2000, async function () {
            if (shown && !/"(pending|retrying|running)"/.test(shown)) return;
            const fresh = (await api('events/' + encodeURIComponent(key))).event;
            if (route === state.route) draw(fresh);
        });
    }

    function renderSummary(box, e, draw) {
        const failed = e.failed || 0;
        const redeliverFailed = el('button', {
            type: 'button', id: 'redeliver-failed', class: failed ? 'primary' : '',
            disabled: failed ? null : true,
            title: failed ? 'Run again the handlers that failed (retrying or dead)' : 'No handler failed',
        }, 'Redeliver failed');
        const redeliverAll = el('button', {
            type: 'button', id: 'redeliver-all', disabled: e.handlers ? null : true,
            title: e.handlers ? 'Run every handler of this delivery again' : 'No handler ran for it',
        }, 'Redeliver all');
        async function redeliver(all) {
            redeliverFailed.disabled = redeliverAll.disabled = true;
            try {
                const r = await api('replay?id=' + encodeURIComponent(e.id) + (all ? '&all=1' : ''),
                    { method: 'POST' });
                flash('Queued ' + r.queued + ' run' + (r.queued === 1 ? '' : 's') +
                    ' again: luahook takes them up within about a second.', 'ok');
                const fresh = (await api('events/' + encodeURIComponent(e.id))).event;
                // redrawn even when nothing changed yet (nothing was queued): the buttons
                // come back
                draw(fresh, true);
            } catch (err) {
                flash('Redelivery failed: ' + err.message, 'error');
                redeliverFailed.disabled = !failed;
                redeliverAll.disabled = !e.handlers;
            }
        }
        redeliverFailed.addEventListener('click', () => redeliver(false));
        redeliverAll.addEventListener('click', () => {
            // handlers that succeeded run again too: their side effects (a message, a
            // training run) happen twice
            const ok = (e.handlers || 0) - failed;
            if (ok > 0 && !window.confirm('Run all ' + e.handlers + ' handler' +
                (e.handlers === 1 ? '' : 's') + ' of this delivery again, including ' +
                (ok === e.handlers ? 'every one' : ok + ' that succeeded') +
                '? What they did happens again.'))
                return;
            redeliver(true);
        });

        const done = e.finished !== null && e.finished !== undefined;
        const items = [
            ['Received', timeCell(e.received)],
            ['Duration', done ? fmtDuration(e.finished - e.received) : 'not finished'],
            ['Action', el('span', { class: 'mono' }, e.action)],
            ['Project', e.project === null ? '—' : String(e.project)],
            ['Path', el('span', { class: 'mono' }, e.path)],
            ['From', el('span', { class: 'mono' }, e.remote)],
            ['Body', fmtBytes(e.body_size !== undefined ? e.body_size : e.body_bytes)],
            ['Handlers', plural(e.handlers, 'run') + (failed ? ', ' + failed + ' failed' : '') + ' · ' +
                plural(e.attempts, 'attempt')],
            ['Journal id', '#' + e.id],
        ];
        if (e.duplicate_of) {
            items.push(['Duplicate of', el('a', { href: deliveryHash(String(e.duplicate_of)) },
                '#' + e.duplicate_of)]);
        }
        clear(box).append(
            el('div', { class: 'head' },
                el('h1', { id: 'delivery-id' }, e.delivery || '#' + e.id),
                el('span', { id: 'delivery-status' }, badge(e.status)),
                el('div', { class: 'actions' }, redeliverFailed, redeliverAll)),
            el('dl', { class: 'meta' }, items.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v)))));
    }

    function renderRuns(box, e) {
        clear(box).append(el('h2', {}, 'Handler runs',
            el('span', { class: 'muted' }, e.runs.length ? 'one per handler, with every attempt' : '')));
        if (!e.runs.length) {
            box.append(el('p', { class: 'card muted' }, e.status === 'duplicate' ?
                'A duplicate: its handlers did not run.' : 'No handler matched this event.'));
            return;
        }
        for (const r of e.runs) box.append(runCard(r));
    }

    function runCard(r) {
        const bad = r.state !== 'ok';
        const card = el('div', { class: 'card run', 'data-handler': r.handler, 'data-state': r.state },
            el('div', { class: 'run-head' },
                el('span', { class: 'handler' }, r.handler),
                badge(r.state),
                el('span', { class: 'muted small' }, r.attempts + ' attempt' + (r.attempts === 1 ? '' : 's')),
                r.next_at ? el('span', { class: 'muted small', title: isoTime(r.next_at) },
                    'next attempt ' + fmtAgo(r.next_at)) : null,
                el('span', { class: 'muted small' }, 'updated ', timeCell(r.updated))));
        if (r.error && bad) {
            card.append(el('pre', { class: 'error run-error' }, r.error));
        }
        if (r.traceback && bad) {
            card.append(el('details', { class: 'traceback', open: true },
                el('summary', {}, 'traceback'), el('pre', {}, r.traceback)));
        }
        const rows = [];
        for (const a of r.history || []) {
            rows.push(el('tr', { 'data-attempt': a.n },
                el('td', { class: 'num' }, String(a.n)),
                el('td', {}, timeCell(a.started)),
                el('td', { class: 'num nowrap' }, a.ended ? fmtDuration(a.ended - a.started) : 'running'),
                el('td', {}, badge(a.outcome || 'running')),
                el('td', { class: 'mono small' }, a.error ? firstLine(a.error) : '')));
            if ((a.error && a.error.indexOf('\n') >= 0) || a.traceback) {
                rows.push(el('tr', {}, el('td', {}), el('td', { class: 'detail', colspan: 4 },
                    el('details', {}, el('summary', {}, 'attempt ' + a.n + ': error and traceback'),
                        a.error ? el('pre', { class: 'error' }, a.error) : null,
                        a.traceback ? el('pre', {}, a.traceback) : null))));
            }
        }
        if (rows.length) {
            card.append(el('table', { class: 'attempts' },
                el('colgroup', {}, el('col', { class: 'c-n' }), el('col', { class: 'c-time' }),
                    el('col', { class: 'c-took' }), el('col', { class: 'c-outcome' }), el('col', {})),
                el('thead', {}, el('tr', {}, el('th', { class: 'num' }, '#'), el('th', {}, 'Started'),
                    el('th', { class: 'num' }, 'Took'), el('th', {}, 'Outcome'), el('th', {}, 'Error'))),
                el('tbody', {}, rows)));
        }
        return card;
    }

    function firstLine(s) {
        const i = s.indexOf('\n');
        return i < 0 ? s : s.slice(0, i) + ' …';
    }

    function renderHeaders(box, headers) {
        const names = Object.keys(headers).sort();
        box.append(names.length ? el('div', { class: 'table-wrap' }, el('table', { class: 'headers', id: 'headers' },
            el('tbody', {}, names.map(n => el('tr', {}, el('td', {}, n), el('td', {}, String(headers[n])))))))
            : el('p', { class: 'muted' }, 'No headers kept.'));
        box.append(el('p', { class: 'muted small' },
            'The secret\'s header is never kept.'));
    }

    function renderBody(box, e) {
        const size = e.body_size !== undefined ? e.body_size : e.body_bytes;
        const download = el('a', {
            class: 'button', id: 'download-body', href: '/-/api/events/' + encodeURIComponent(e.id) + '/body',
            download: 'delivery-' + (e.delivery || e.id) + '.json',
        }, 'Download');
        const tools = el('div', { class: 'body-tools' },
            el('span', { class: 'muted small' }, fmtBytes(size) +
                (e.body_truncated ? ', shown in part' : '') + ' · token and task_data_password masked'));
        const content = el('div', { id: 'body-content' });
        box.append(el('h2', {}, 'Body'), tools, content);
        if (e.body_truncated) {
            content.append(el('p', { class: 'banner warn', id: 'body-truncated' },
                'The body is large: its first 256 KiB are shown as text. Download it for the whole.'));
        }
        if (e.body === null || e.body === undefined) {
            if (e.body_error && !e.body_truncated) {
                content.append(el('p', { class: 'muted small' }, 'Not JSON: ' + e.body_error));
            }
            content.append(el('pre', { id: 'body-text' }, e.body_text || ''));
            tools.append(download);
            return;
        }
        const count = countNodes(e.body, TREE_MAX_NODES + 1);
        if (count > TREE_MAX_NODES) {
            content.append(el('pre', { id: 'body-text' }, JSON.stringify(e.body, null, 2)));
            tools.append(download);
            return;
        }
        const tree = el('div', { class: 'tree', id: 'body-tree' }, jsonNode(null, e.body, 0));
        const expand = el('button', { type: 'button' }, 'Expand all');
        const collapse = el('button', { type: 'button' }, 'Collapse all');
        expand.addEventListener('click', () => tree.querySelectorAll('details').forEach(d => { d.open = true; }));
        collapse.addEventListener('click', () => tree.querySelectorAll('details').forEach((d, i) => { d.open = i === 0; }));
        tools.append(expand, collapse, download);
        content.append(tree);
    }

    function countNodes(v, limit) {
        let n = 0;
        const stack = [v];
        while (stack.length && n < limit) {
            const x = stack.pop();
            n++;
            if (x && typeof x === 'object') {
                for (const k in x) stack.push(x[k]);
            }
        }
        return n;
    }

    // One JSON value as a foldable tree: objects and arrays are <details>, open near the top.
    function jsonNode(key, v, depth) {
        const label = key === null ? [] : [el('span', { class: 'k' }, JSON.stringify(key)), el('span', { class: 'p' }, ': ')];
        if (v && typeof v === 'object') {
            const isArray = Array.isArray(v);
            const keys = isArray ? v.map((_, i) => i) : Object.keys(v);
            const open = isArray ? '[' : '{', close = isArray ? ']' : '}';
            if (!keys.length) return el('div', { class: 'leaf' }, label, el('span', { class: 'p' }, open + close));
            const summary = isArray ? keys.length + ' item' + (keys.length === 1 ? '' : 's')
                : keys.length + ' key' + (keys.length === 1 ? '' : 's');
            const d = el('details', { open: depth < 2 && keys.length <= 50 },
                el('summary', {}, label, el('span', { class: 'p' }, open + ' '),
                    el('span', { class: 'muted small' }, summary)),
                el('div', { class: 'kids' }, keys.map(k => jsonNode(isArray ? null : k, v[k], depth + 1))),
                el('span', { class: 'p' }, close));
            return d;
        }
        let cls = 'z', text = 'null';
        if (typeof v === 'string') {
            cls = v === '***' && (key === 'token' || key === 'task_data_password') ? 'masked' : 's';
            text = JSON.stringify(v);
        } else if (typeof v === 'number') {
            cls = 'n';
            text = String(v);
        } else if (typeof v === 'boolean') {
            cls = 'b';
            text = String(v);
        }
        return el('div', { class: 'leaf' }, label, el('span', { class: cls }, text));
    }

    // ------------------------------------------------------------------ live

    async function showLive() {
        const route = state.route;
        document.title = 'Live · luahook';
        const box = el('div', { id: 'live' }, el('p', { class: 'muted' }, 'Loading…'));
        clear(view).append(box);
        let prev = null;
        async function load() {
            const live = await api('live');
            if (route !== state.route) return;
            setJournal(live.journal === true);
            renderMeta(live);
            renderLive(box, live, prev);
            prev = { at: Date.now() / 1000, totals: live.totals };
        }
        await load();
        every(2000, load);
    }

    // The actions the handlers are for (not "*"), each once, sorted.
    function handlerActions(live) {
        const set = new Set();
        for (const s of live.scripts || []) {
            for (const hd of s.handlers || []) {
                if (hd.action && hd.action !== '*') set.add(hd.action);
            }
        }
        return [...set].sort();
    }

    // The start time, not the uptime: the header is drawn once and must not go stale on
    // the views that do not poll /-/api/live.
    function renderMeta(live) {
        const meta = document.getElementById('server-meta');
        meta.textContent = 'luahook ' + (live.version || '') + ' · started ' +
            fmtTime(Date.now() / 1000 - (live.uptime || 0));
        meta.title = 'up ' + fmtDuration(live.uptime);
    }

    function renderLive(box, live, prev) {
        const t = live.totals || {};
        const js = live.journal_stats;
        const series = live.series || { events: [], failures: [], retries: [] };
        // events/s from the counter between two polls; at first, from the last full minute
        let rate;
        if (prev && prev.totals && Date.now() / 1000 - prev.at > 0.5) {
            rate = (t.events - prev.totals.events) / (Date.now() / 1000 - prev.at);
        } else {
            const ev = series.events || [];
            rate = ev.length > 1 ? ev[ev.length - 2] / 60 : 0;
        }
        const hour = k => (series[k] || []).reduce((a, b) => a + b, 0);
        const stat = (id, label, value, hint, tone) => el('div', { class: 'card stat', id: id },
            el('div', { class: 'label' }, label),
            el('div', { class: 'value' + (tone ? ' ' + tone : '') }, value),
            el('div', { class: 'hint' }, hint));
        const stats = el('div', { class: 'stats' },
            stat('stat-rate', 'Events / s', Math.max(rate, 0).toFixed(rate > 0 && rate < 10 ? 2 : 0),
                fmtCount(hour('events')) + ' in the last hour'),
            stat('stat-events', 'Events', fmtCount(t.events), 'since start'),
            stat('stat-failures', 'Failures', fmtCount(t.failures), fmtCount(hour('failures')) + ' in the last hour',
                t.failures ? 'bad' : ''),
            stat('stat-retries', 'Retries', fmtCount(t.retries), fmtCount(hour('retries')) + ' in the last hour',
                t.retries ? 'warn' : ''),
            stat('stat-rejected', 'Rejected', fmtCount(t.rejected), 'bad requests, 401, 413, 503'),
            js ? [
                stat('stat-pending', 'Pending', fmtCount(js.pending), 'deliveries not done'),
                stat('stat-retrying', 'Retrying', fmtCount(js.retrying), 'runs waiting to retry',
                    js.retrying ? 'warn' : ''),
                stat('stat-dead', 'Dead', fmtCount(js.dead), 'runs out of retries', js.dead ? 'bad' : ''),
                stat('stat-oldest', 'Oldest pending', js.oldest_pending_age === null ? '—' :
                    fmtDuration(js.oldest_pending_age), 'age of the oldest unfinished delivery'),
            ] : stat('stat-journal', 'Journal', 'off', 'no --state-dir: nothing is kept'));

        const charts = el('div', { class: 'charts section', id: 'charts' },
            chartCard('chart-events', 'Events per minute', series, 'events', ''),
            chartCard('chart-failures', 'Failures per minute', series, 'failures', 'failures'),
            chartCard('chart-retries', 'Retries per minute', series, 'retries', 'retries'));

        const vm = live.vm || {};
        const reload = vm.reload || {};
        const reloadText = reload.at === null || reload.at === undefined ? 'no reload since start' :
            fmtAgo(reload.at);
        const server = el('div', { class: 'card', id: 'vm' },
            el('h2', {}, 'Handlers VM'),
            el('dl', { class: 'meta' },
                el('div', {}, el('dt', {}, 'Generation'), el('dd', { id: 'vm-generation' }, String(vm.generation))),
                el('div', {}, el('dt', {}, 'Last reload'), el('dd', { id: 'vm-reload' },
                    reload.ok === false ? badge('failed') : reload.ok ? badge('ok') : null, ' ', reloadText)),
                el('div', {}, el('dt', {}, 'Version'), el('dd', {}, live.version || '—')),
                el('div', {}, el('dt', {}, 'Up'), el('dd', {}, fmtDuration(live.uptime)))),
            reload.problems && reload.problems.length ? [
                el('h3', { class: 'section' }, 'Problems of the last reload (the previous handlers keep running)'),
                el('ul', { class: 'problems', id: 'reload-problems' }, reload.problems.map(p => el('li', {}, p))),
            ] : null);

        const scripts = live.scripts || [];
        const handlerRows = [];
        for (const s of scripts) {
            for (const hd of s.handlers || []) {
                handlerRows.push(el('tr', {},
                    el('td', { class: 'mono' }, s.file),
                    el('td', { class: 'mono' }, hd.handler),
                    el('td', { class: 'mono' }, hd.action),
                    el('td', { class: 'mono muted' }, hd.site),
                    el('td', {}, hd.recipe || '')));
            }
            if (!(s.handlers || []).length) {
                handlerRows.push(el('tr', {}, el('td', { class: 'mono' }, s.file),
                    el('td', { class: 'muted', colspan: 4 }, 'no handlers')));
            }
        }
        const handlers = el('div', { class: 'section', id: 'handlers' },
            el('h2', {}, 'Scripts and handlers', el('span', { class: 'muted' },
                scripts.length + ' script' + (scripts.length === 1 ? '' : 's'))),
            el('div', { class: 'table-wrap' }, handlerRows.length ? el('table', {},
                el('thead', {}, el('tr', {}, el('th', {}, 'Script'), el('th', {}, 'Handler'), el('th', {}, 'Action'),
                    el('th', {}, 'Defined at'), el('th', {}, 'Recipe'))),
                el('tbody', {}, handlerRows)) : el('p', { class: 'empty' }, 'No scripts loaded.')));

        const instances = live.instances || [];
        const inst = el('div', { class: 'section', id: 'instances' },
            el('h2', {}, 'Recipe instances'),
            instances.length ? el('div', { class: 'table-wrap' }, el('table', {},
                el('thead', {}, el('tr', {}, el('th', {}, 'Instance'), el('th', {}, 'Recipe'))),
                el('tbody', {}, instances.map(i => el('tr', {}, el('td', { class: 'mono' }, i.name),
                    el('td', {}, i.recipe)))))) : el('p', { class: 'muted' }, 'No recipe in use.'));

        clear(box).append(stats, charts, el('div', { class: 'section' }, server), handlers, inst);
    }

    // A bar chart of one series (one bar a minute, oldest first) in inline SVG.
    function chartCard(id, title, series, key, cls) {
        const values = series[key] || [];
        const n = Math.max(values.length, 1);
        const max = Math.max(1, ...values);
        const W = 300, H = 60;
        const bw = W / n;
        const chart = svg('svg', {
            class: 'chart', viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none',
            role: 'img', 'aria-label': title + ' over the last hour',
        });
        chart.append(svg('line', { class: 'grid', x1: 0, x2: W, y1: H / 2, y2: H / 2 }));
        const step = series.step || 60;
        values.forEach(function (v, i) {
            const h = v ? Math.max(1.5, (v / max) * (H - 2)) : 0;
            const at = (series.start || 0) + i * step;
            chart.append(svg('rect', {
                class: 'bar ' + cls, x: (i * bw + 0.15 * bw).toFixed(2), y: (H - h).toFixed(2),
                width: (bw * 0.7).toFixed(2), height: h.toFixed(2),
            }, svg('title', {}, fmtTime(at) + ': ' + v)));
        });
        chart.append(svg('line', { class: 'base', x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5 }));
        const total = values.reduce((a, b) => a + b, 0);
        return el('div', { class: 'card', id: id },
            el('div', { class: 'chart-head' }, el('h3', {}, title),
                el('span', { class: 'muted small' }, 'max ' + fmtCount(max === 1 && !total ? 0 : max) +
                    ' · ' + fmtCount(total) + ' in all')),
            chart,
            el('div', { class: 'axis' }, el('span', {}, '60 min ago'), el('span', {}, '30'), el('span', {}, 'now')));
    }

    // ------------------------------------------------------------------ start

    // The server's 303 is the sign-out done; anything else (no CSRF token read, luahook
    // away) is said, rather than showing the console again as if signed out.
    async function signOut() {
        let res;
        try {
            res = await fetch('/-/signout', {
                method: 'POST', credentials: 'same-origin', redirect: 'manual',
                headers: { 'X-CSRF-Token': state.csrf || '', 'Content-Type': 'application/x-www-form-urlencoded' },
                body: new URLSearchParams({ csrf: state.csrf || '' }).toString(),
            });
        } catch (e) {
            flash('Not signed out: luahook does not answer (' + e.message + ')', 'error');
            return;
        }
        if (res.type === 'opaqueredirect' || res.ok || res.status === 401) {
            location.replace('/-/');
            return;
        }
        let why = 'HTTP ' + res.status;
        try {
            why = (await res.text()).trim() || why; // the server's plain-text reason
        } catch (e) { /* no body */ }
        flash('Not signed out: ' + why, 'error');
    }

    async function start() {
        document.getElementById('signout').addEventListener('click', signOut);
        // both at once (one round trip less before the first view): the CSRF token, and
        // whether deliveries are kept, which decides what the list shows
        const [session, live] = await Promise.allSettled([api('session'), api('live')]);
        if ([session, live].some(r => r.status === 'rejected' && r.reason.status === 401)) return;
        if (session.status === 'fulfilled') {
            state.csrf = session.value.csrf;
        } else {
            flash('Cannot read the session: ' + session.reason.message, 'error');
        }
        if (live.status === 'fulfilled') {
            setJournal(live.value.journal === true);
            renderMeta(live.value);
            state.actions = handlerActions(live.value);
        }
        // "/" goes to the search field, as in most consoles
        document.addEventListener('keydown', function (ev) {
            const field = document.getElementById('search');
            if (ev.key === '/' && field && !/^(INPUT|SELECT|TEXTAREA)$/.test(ev.target.tagName)) {
                ev.preventDefault();
                field.focus();
            }
        });
        window.addEventListener('hashchange', route);
        route();
    }

    start();
})();
