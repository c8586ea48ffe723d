// "Be a new user": a stranger's profile and actions go to the public API, and after each one
// the page shows the new top 10, the route the stack took and how the list changed.
'use strict';

(function () {
  const settings = JSON.parse(document.getElementById('settings').textContent);
  const $ = (id) => document.getElementById(id);
  const state = { user: null, top: [], titles: {}, done: {}, step: 0, events: 0 };

  const scale = settings.rating_scale;
  const ratings = (Number.isInteger(scale[0]) || scale[0] % 1 === 0) && scale[1] - scale[0] >= 1 &&
    scale[1] - scale[0] <= 9 ? Array.from({ length: scale[1] - scale[0] + 1 }, (_, i) => scale[0] + i)
    : [scale[0], scale[1]];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === 'class') node.className = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }

  function uid(prefix) {
    const random = Math.floor(Math.random() * 2 ** 32).toString(36);
    return `${prefix}-${Date.now().toString(36)}-${random}`;
  }

  function showError(message) {
    const box = $('error');
    box.textContent = message;
    box.hidden = !message;
  }

  // One call of the public API: JSON in and out, the bearer token when one is given.
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = $('token').value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const payload = await response.json().catch(() => ({}));
    if (!response.ok) {
      let detail = payload.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join('; ');
      if (response.status === 401) detail = 'this service needs an API token with the read and write scopes';
      throw new Error(`${method} ${path.split('?')[0]}: ${response.status} ${detail || response.statusText}`);
    }
    return payload;
  }

  async function titlesOf(ids) {
    const missing = ids.filter((id) => !(id in state.titles));
    if (missing.length) {
      const found = await api('GET', `/v1/items?ids=${encodeURIComponent(missing.join(','))}`);
      for (const row of found.items) state.titles[row.item] = row;
    }
  }

  function titleOf(id) {
    const row = state.titles[id];
    return row && row.title ? row.title : id;
  }

  function describeRoute(out) {
    const route = out.route;
    const members = route.members.map((m, i) =>
      route.members.length > 1 ? `${m} ${route.weights[i].toFixed(2)}` : m).join(', ');
    const band = route.band === null ? '' : `band ${route.band}, `;
    const breaker = route.breaker_tripped ? 'circuit breaker TRIPPED: popularity fallback'
      : 'circuit breaker not tripped';
    return `K=${out.k}: ${band}${route.kind} ${members}; ${breaker}`;
  }

  // The new top 10 after an action, what changed against the last one, and a timeline line.
  async function refresh(action) {
    const out = await api('GET', `/v1/users/${encodeURIComponent(state.user)}/recommendations?n=10`);
    const ids = out.items.map((x) => x.item);
    await titlesOf(ids);
    const before = new Set(state.top);
    const route = $('route');
    route.textContent = describeRoute(out);
    route.classList.toggle('tripped', out.route.breaker_tripped);
    route.dataset.k = out.k;
    $('top').replaceChildren(...out.items.map((x) => el('li', {
      'data-item': x.item, class: state.step > 0 && !before.has(x.item) ? 'new-in' : '',
    }, el('span', { class: 'title' }, titleOf(x.item)), el('span', { class: 'score' }, x.score.toFixed(3)),
    ...rateButtons(x.item))));
    const entering = ids.filter((id) => !before.has(id)).length;
    const change = state.step === 0 ? 'first list' : `${entering} of 10 new`;
    const r = out.route;
    const how = `K=${out.k}${r.band === null ? '' : `, band ${r.band}`}, ${r.kind}` +
      (r.breaker_tripped ? ', breaker tripped' : '');
    $('timeline').append(el('li', { 'data-k': out.k }, `${action} → `, el('span', { class: 'change' }, change),
      `; ${how}; top 3: ${ids.slice(0, 3).map(titleOf).join(' · ')}`));
    state.top = ids;
    state.step += 1;
    document.body.dataset.step = state.step;
  }

  function rateButtons(item) {
    const buttons = ratings.map((r) => el('button', {
      class: 'rate' + (state.done[item] === r ? ' done' : ''), type: 'button', title: `rate ${r}`,
      'data-rating': r, onclick: () => act(item, r),
    }, ratings.length === 2 ? (r === ratings[1] ? '👍' : '👎') : `${r}★`));
    buttons.push(el('button', { class: 'rate' + (state.done[item] === 'click' ? ' done' : ''), type: 'button',
      'data-click': '1', title: 'click (no rating)', onclick: () => act(item, null) }, 'click'));
    return buttons;
  }

  async function act(item, rating) {
    showError('');
    try {
      state.events += 1;
      await api('POST', '/v1/events', { events: [{
        event_id: uid(`${state.user}-e${state.events}`), user: state.user, item,
        rating, kind: rating === null ? 'click' : 'rating',
      }] });
      state.done[item] = rating === null ? 'click' : rating;
      await titlesOf([item]);
      await refresh(rating === null ? `clicked “${titleOf(item)}”` : `rated “${titleOf(item)}” ${rating}`);
      markSearch();
    } catch (error) {
      showError(error.message);
    }
  }

  async function search(query) {
    const found = await api('GET', `/v1/items?n=12&q=${encodeURIComponent(query)}`);
    for (const row of found.items) state.titles[row.item] = row;
    $('search-results').replaceChildren(...found.items.map((row) => el('li', { 'data-item': row.item },
      el('span', { class: 'title' }, row.title || row.item,
        el('span', { class: 'meta' }, ` ${row.genres.join(', ')}${row.year ? ' · ' + row.year : ''}`)),
      ...rateButtons(row.item))));
    if (!found.items.length) $('search-results').append(el('li', {}, 'nothing matches'));
  }

  function markSearch() {
    for (const li of $('search-results').querySelectorAll('li[data-item]')) {
      const done = state.done[li.dataset.item];
      for (const b of li.querySelectorAll('button.rate')) {
        b.classList.toggle('done', b.dataset.click ? done === 'click' : Number(b.dataset.rating) === done);
      }
    }
  }

  async function start(event) {
    event.preventDefault();
    showError('');
    try {
      const profile = {};
      for (const select of $('profile-fields').querySelectorAll('select')) {
        if (select.value !== '') profile[select.name] = settings.profiles[select.name][Number(select.value)];
      }
      state.user = uid('guest');
      state.top = [];
      state.step = 0;
      state.done = {};
      $('timeline').replaceChildren();
      if (Object.keys(profile).length) {
        await api('PUT', `/v1/users/${encodeURIComponent(state.user)}`, { profile });
      }
      const who = Object.entries(profile).map(([k, v]) => `${k} ${v}`).join(', ') || 'no profile';
      $('user-label').textContent = `you are ${state.user} (${who})`;
      $('workspace').hidden = false;
      await refresh(`arrived with ${who}`);
      await search('');
    } catch (error) {
      showError(error.message);
    }
  }

  async function addItem(event) {
    event.preventDefault();
    showError('');
    try {
      const title = $('item-title').value.trim();
      const genres = $('item-genres').value.split(',').map((g) => g.trim()).filter(Boolean);
      const slug = title.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'item';
      const id = uid(`new-${slug}`);
      await api('PUT', `/v1/items/${encodeURIComponent(id)}`, { features: { title, genres } });
      state.titles[id] = { item: id, title, genres };
      const rank = await api('GET', `/v1/users/${encodeURIComponent(state.user)}/rank?item=${encodeURIComponent(id)}`);
      $('item-rank').textContent = `“${title}” now ranks #${rank.rank} of ${rank.of} for you` +
        (rank.score === null ? '' : ` (score ${rank.score.toFixed(3)})`);
      $('item-rank').dataset.rank = rank.rank;
      await refresh(`added “${title}” (ranks #${rank.rank} for you)`);
      $('search').value = title;
      await search(title);
    } catch (error) {
      showError(error.message);
    }
  }

  function setup() {
    const fields = $('profile-fields');
    for (const [name, values] of Object.entries(settings.profiles)) {
      fields.append(el('label', {}, `${name} `, el('select', { name },
        el('option', { value: '' }, '(none)'), ...values.map((v, i) => el('option', { value: i }, v)))));
    }
    if (!Object.keys(settings.profiles).length) fields.append('This data set has no profile fields.');
    $('report-link').hidden = !settings.report;
    $('model-version').textContent = `model ${settings.model_version} on ${settings.dataset}`;
    $('token').value = sessionStorage.getItem('thaw-token') || '';
    $('token').addEventListener('change', () => sessionStorage.setItem('thaw-token', $('token').value.trim()));
    $('profile-form').addEventListener('submit', start);
    $('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      search($('search').value).catch((error) => showError(error.message));
    });
    $('item-form').addEventListener('submit', addItem);
    document.body.dataset.ready = '1';
  }

  setup();
}());
