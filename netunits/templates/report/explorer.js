// The unit explorer's index: filter by role (ROF of the pooled units, and ROF at the layer itself),
// concept and detector status, sort by any column. Filters and the order can be set from the link:
// index.html#role=test_only&layer_role=both&concept=hole&match=substring&in=formula&detectors=1&sort=iou&order=desc
const body = document.querySelector('#units tbody');
const rows = Array.from(body.querySelectorAll('tr'));
const role = document.getElementById('role'), layerRole = document.getElementById('layer-role'),
      concept = document.getElementById('concept'),
      field = document.getElementById('in'), match = document.getElementById('match'),
      detectors = document.getElementById('detectors'), shown = document.getElementById('shown'),
      linkError = document.getElementById('linkerror');
const options = select => Array.from(select.options).map(o => o.value).filter(v => v);
const roleSelects = {role: [role, 'role'], layer_role: [layerRole, 'layer ROF role']};

// The concept names a row holds in one field: dissection's concept, CLIP-Dissect's description
// (which may hold spaces) or every concept of the compositional formula (space-separated).
function names(row, key) {
  if (key === 'any') return ['concept', 'formula', 'clip'].flatMap(k => names(row, k));
  const text = row.dataset[key] || '';
  return !text ? [] : key === 'formula' ? text.split(' ') : [text];
}

function conceptMatches(row) {
  const wanted = concept.value.trim();
  if (!wanted) return true;
  const found = names(row, field.value);
  return match.value === 'substring' ? found.some(n => n.includes(wanted)) : found.includes(wanted);
}

function apply() {
  let n = 0;
  for (const row of rows) {
    const ok = (!role.value || row.dataset.role === role.value) &&
               (!layerRole.value || row.dataset.layerRole === layerRole.value) && (!concept || conceptMatches(row)) &&
               (!detectors || !detectors.checked || row.dataset.detector === '1');
    row.hidden = !ok;
    if (ok) n++;
  }
  shown.textContent = n;
}

const headings = Array.from(document.querySelectorAll('#units th'));
function sortBy(th, ascending) {
  const col = headings.indexOf(th), numeric = th.dataset.numeric === '1';
  rows.sort((a, b) => {
    const x = a.children[col].dataset.value, y = b.children[col].dataset.value;
    let c;
    if (numeric) {
      // empty cells sort last in either direction
      const p = x === '' ? NaN : parseFloat(x), q = y === '' ? NaN : parseFloat(y);
      if (isNaN(p) || isNaN(q)) return isNaN(p) - isNaN(q);
      c = p - q;
    } else {
      if (!x || !y) return !x - !y;
      c = x.localeCompare(y);
    }
    // ties keep unit order
    return (ascending ? c : -c) || (parseInt(a.children[0].dataset.value) - parseInt(b.children[0].dataset.value));
  });
  for (const other of headings) {
    other.removeAttribute('aria-sort');
    other.querySelector('.arrow').textContent = '';
  }
  th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  th.querySelector('.arrow').textContent = ascending ? '\u25B2' : '\u25BC';
  rows.forEach(r => body.appendChild(r));
}
headings.forEach(th => th.addEventListener('click', () => sortBy(th, th.getAttribute('aria-sort') !== 'ascending')));

// Filters named in the link; anything this page cannot apply is said, not silently dropped.
const problems = [];
for (const part of location.hash.slice(1).split('&')) {
  if (!part.includes('=')) continue;              // a plain anchor such as #unit-17
  const [key, raw] = part.split('=');
  const value = decodeURIComponent(raw || '');
  if (key in roleSelects) {
    const [select, what] = roleSelects[key], known = options(select);
    if (value && !known.includes(value)) {
      select.add(new Option(value + ' (unknown role)', value));
      problems.push('the link asks for ' + what + ' "' + value + '", which no unit has; ' +
                    (known.length ? 'the roles are ' + known.join(', ') : 'this report shows no ' + what + 's'));
    }
    select.value = value;
  } else if (key === 'sort' || key === 'order') {
    continue;                                     // applied below, once every part is read
  } else if (key === 'detectors' && detectors) {
    detectors.checked = value === '1';
  } else if (concept && (key === 'concept' || key === 'match' || key === 'in')) {
    const element = {concept: concept, match: match, in: field}[key];
    if (key !== 'concept' && !Array.from(element.options).some(o => o.value === value)) {
      problems.push('the link sets ' + key + ' to "' + value + '"; it can be ' +
                    Array.from(element.options).map(o => o.value).join(', '));
    } else {
      element.value = value;
    }
  } else {
    problems.push('the link names "' + key + '", which this page cannot filter by');
  }
}
const wanted = new URLSearchParams(location.hash.slice(1));
if (wanted.has('sort') || wanted.has('order')) {
  const th = headings.find(h => h.dataset.key === (wanted.get('sort') || 'unit'));
  const order = wanted.get('order') || 'asc';
  if (!th) {
    problems.push('the link sorts by "' + wanted.get('sort') + '"; the columns are ' +
                  headings.map(h => h.dataset.key).join(', '));
  } else if (order !== 'asc' && order !== 'desc') {
    problems.push('the link sets order to "' + order + '"; it can be asc, desc');
  } else {
    sortBy(th, order === 'asc');
  }
}
if (problems.length) {
  linkError.textContent = problems.join('; ') + '.';
  linkError.hidden = false;
}
[role, layerRole, concept, field, match, detectors].filter(e => e).forEach(e => e.addEventListener('input', apply));
apply();
