"""Global analysis of the class-code manifold: codes export, 2-D maps, separability, swaps, smoothness."""

from caex.manifold.analysis import analyse_manifold, check_inputs
from caex.manifold.codes import CodesTable, encode_bundle, encode_image_set, write_codes_csv
from caex.manifold.maps import maps_html, plot_map, project_2d, subsample_rows
from caex.manifold.separability import Separability, pixel_pca, random_forest_accuracy
from caex.manifold.smoothness import (monotone_paths, sample_path_pairs, smote_codes, smote_smoothness,
                                      straight_path_probabilities)
from caex.manifold.swap import sample_swap_pairs, swap_predictions, swap_success_matrix

__all__ = [
    "CodesTable",
    "Separability",
    "analyse_manifold",
    "check_inputs",
    "encode_bundle",
    "encode_image_set",
    "maps_html",
    "monotone_paths",
    "pixel_pca",
    "plot_map",
    "project_2d",
    "random_forest_accuracy",
    "sample_path_pairs",
    "sample_swap_pairs",
    "smote_codes",
    "smote_smoothness",
    "straight_path_probabilities",
    "subsample_rows",
    "swap_predictions",
    "swap_success_matrix",
    "write_codes_csv",
]
