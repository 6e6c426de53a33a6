"""
=====================================================
Choosing the depth and weight tying with GridSearchCV
=====================================================

The learned estimators are ordinary scikit-learn estimators, so their hyper-parameters can be
tuned with :class:`~sklearn.model_selection.GridSearchCV`. This example searches the number of
layers of a learned AMP and whether its matrices are tied (one matrix shared by all layers)
or untied (one per layer), scoring by NMSE with :data:`sklearn_unfold.nmse_scorer`.

Tied networks have far fewer parameters, which matters when training pairs are scarce; here
the training set is deliberately small (1,500 pairs of a problem with ``N = 100`` unknowns and
``M = 50`` measurements), and each network is trained for at most ten passes over the pairs
per stage, to keep the 24 fits of the search (plus the final refit) within the gallery's
budget.
"""

# %%
# The search
# ----------
# ``nmse_scorer`` returns the *negated* NMSE in dB, because scikit-learn maximises scores.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_unfold import LAMPRegressor, nmse_db, nmse_scorer
from sklearn_unfold.datasets import make_compressed_sensing

Y, X, A = make_compressed_sensing("giid", n_samples=1500, n_features=100, n_measurements=50,
                                  random_state=0)
Y_test, X_test, _ = make_compressed_sensing("giid", n_samples=1000, A=A, random_state=1)

search = GridSearchCV(
    LAMPRegressor(A=A, max_epochs=10, random_state=0),  # half the default budget: a quick example
    param_grid={"n_layers": [2, 4, 6, 8], "tied": [True, False]},
    scoring=nmse_scorer,
    cv=KFold(n_splits=3, shuffle=True, random_state=0),
)
search.fit(Y, X)
print("best parameters:", search.best_params_)
print(f"best cross-validated NMSE: {-search.best_score_:.1f} dB")
print(f"refitted on all pairs, test NMSE: {nmse_db(X_test, search.predict(Y_test)):.1f} dB")

# %%
# The results table
# -----------------
# ``cv_results_`` holds one row per candidate. Convert the scores back to NMSE in dB (lower is
# better) and print them as a table.
res = search.cv_results_
nmse_mean = -res["mean_test_score"]
nmse_std = res["std_test_score"]
print(f"{'n_layers':>8s} {'tied':>6s} {'NMSE (dB)':>10s} {'± std':>6s} {'fit (s)':>8s}")
for i, params in enumerate(res["params"]):
    print(f"{params['n_layers']:8d} {params['tied']!s:>6s} {nmse_mean[i]:10.1f} "
          f"{nmse_std[i]:6.2f} {res['mean_fit_time'][i]:8.1f}")

# %%
# And plot it: one line per tying choice, the cross-validated NMSE against depth, with the
# standard deviation over the folds as error bars.
fig, ax = plt.subplots(figsize=(6, 4))
layers = np.array([p["n_layers"] for p in res["params"]])
tied = np.array([p["tied"] for p in res["params"]])
for value, label, marker in [(True, "tied", "o"), (False, "untied", "s")]:
    sel = tied == value
    order = np.argsort(layers[sel])
    ax.errorbar(layers[sel][order], nmse_mean[sel][order], yerr=nmse_std[sel][order],
                marker=marker, capsize=3, label=f"LAMP-bg, {label}")
ax.set_xlabel("n_layers")
ax.set_xticks(sorted(set(layers)))
ax.set_ylabel("cross-validated NMSE (dB)")
ax.set_title("GridSearchCV over n_layers and tied")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Deeper networks are better in both forms. With only about 1,000 training pairs per fold, the
# tied networks, with one matrix instead of one per layer, are slightly ahead from four layers
# on: the extra freedom of the untied ones does not pay with this little data, although the
# gap is within the fold-to-fold spread at eight layers. With plenty of data (or fresh
# signals drawn from a prior at every step, ``signal_prior``) the balance moves towards untied
# weights; see :doc:`/user_guide/training`. The selected candidate is refitted on all the
# pairs (``refit=True``, the default): ``search.best_estimator_`` is ready to use.
